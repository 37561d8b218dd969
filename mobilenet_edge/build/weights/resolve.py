"""``--weights`` values -> a file: a path, ``random``, a source name (``google-quant``, ``google-float``,
``keras``, optionally ``SOURCE/ALPHA/RES``), or nothing (the pretrained default, offline first).

The default (no ``--weights``) for (alpha, res), first that exists:

1. the shipped ``google-quant`` file of exactly (alpha, res) (package data, :mod:`.download`),
2. the cached ``google-quant`` file of exactly (alpha, res),
3. a shipped, then a cached ``google-quant`` file of the same alpha at another res (trained at that res:
   the manifest says so and stderr warns once),
4. a download of ``google-quant`` (alpha, res),
5. else :class:`~mobilenet_edge.core.errors.WeightsError`: one line saying what to download and
   that ``--weights random`` gives random weights on purpose.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ...core.errors import UsageError, WeightsError
from . import download as D
from .registry import ALPHAS, SOURCES, Entry, entries_for_alpha, lookup, parse_name

DEFAULT_SOURCE = "google-quant"
RANDOM = "random"


@dataclass
class Resolved:
    """What ``--weights`` resolved to.

    Attributes:
        path: the weights file, or None for random weights.
        entry: the registry entry (None for a path or random).
        origin: ``"shipped"`` | ``"cache"`` | ``"download"`` | ``"file"`` | ``"random"``.
        res: the resolution the model is exported at (pixels).
    """

    path: Path | None
    entry: Entry | None = None
    origin: str = "file"
    res: int = 224

    @property
    def trained_res(self) -> int | None:
        return self.entry.res if self.entry else None

    @property
    def other_res(self) -> bool:
        """True when the weights were trained at another resolution than the export's."""
        return self.entry is not None and self.entry.res != self.res

    def record(self) -> dict | None:
        """The manifest's ``weights.registry`` record (None for a path or random)."""
        if self.entry is None:
            return None
        e = self.entry
        return {"name": e.name, "source": e.source, "trained": e.trained, "alpha": e.alpha, "trained_res": e.res,
                "res_matches": e.res == self.res, "url": e.url, "top1": e.top1, "top5": e.top5,
                "accuracy_source": e.accuracy_source, "origin": self.origin}

    def warning(self) -> str | None:
        """The one stderr line for weights trained at another res, else None."""
        if not self.other_res:
            return None
        e = self.entry
        return (f"warning: {e.name} was trained at res {e.res}, exporting at res {self.res} (accuracy will differ "
                f"from the published {e.top1}%); the manifest records it")


def _local(entry: Entry, warn=None) -> tuple[Path, str] | None:
    p = D.shipped_path(entry)
    if p is not None:
        return p, "shipped"
    p = D.cached(entry)  # a stale cached file is reported by fetch, when it downloads again
    return (p, "cache") if p is not None else None


def _get(entry: Entry, res: int, progress, warn) -> Resolved:
    """Shipped, else cached, else downloaded file of ``entry``."""
    hit = _local(entry, warn)
    if hit is not None:
        return Resolved(hit[0], entry, hit[1], res)
    return Resolved(D.fetch(entry, progress=progress, warn=warn), entry, "download", res)


def resolve_weights(spec: str | Path | None, *, alpha: float | None, res: int,
                    progress: Callable[[int, int], None] | None = None,
                    warn: Callable[[str], None] | None = None, download: bool = True) -> Resolved:
    """Resolve ``--weights`` (see the module docstring).

    Args:
        spec: None (pretrained default), ``"random"``, a source name, or a path.
        alpha: ``--alpha`` (None: 1.0 for names; from the file for paths).
        res: ``--res`` in pixels.
        progress: download progress callback (bytes done, total).
        warn: one-line notes (trust on first use, stale cache).
        download: False: never touch the network (the default then stops at step 3).
    Raises:
        UsageError: unknown name (close ones listed), alpha/res not in a source's grid, missing file.
        WeightsError: download failed, or no pretrained weights reachable for the default.
    """
    if spec is None:
        return _default(1.0 if alpha is None else alpha, res, progress, warn, download)
    text = str(spec)
    if text == RANDOM:
        return Resolved(None, origin="random", res=res)
    p = Path(text)
    if text.split("/")[0] not in SOURCES and (p.exists() or p.suffix or "/" in text or "\\" in text):
        return Resolved(p, origin="file", res=res)  # a path (missing files are reported by the loader)
    source, a, r = parse_name(text)  # unknown names: UsageError listing close ones
    if alpha is not None and a is not None and abs(alpha - a) > 1e-9:
        raise UsageError(f"--alpha {alpha:g} contradicts --weights {text}")
    entry = lookup(source, a if a is not None else (1.0 if alpha is None else alpha), r if r is not None else res)
    return _get(entry, res, progress, warn)


def _default(alpha: float, res: int, progress, warn, download: bool) -> Resolved:
    """Pretrained default for (alpha, res): see the module docstring."""
    same = entries_for_alpha(DEFAULT_SOURCE, alpha)
    if not same:
        raise WeightsError(
            f"no pretrained weights for alpha {alpha:g} (Google's grid: alpha {', '.join(f'{a:g}' for a in ALPHAS)});"
            " pass --weights FILE, or --weights random for random weights on purpose")
    exact = [e for e in same if e.res == res]
    for e in exact:
        hit = _local(e, warn)
        if hit is not None:
            return Resolved(hit[0], e, hit[1], res)
    for e in sorted(same, key=lambda e: abs(e.res - res)):  # nearest trained res first
        hit = _local(e, warn)
        if hit is not None:
            return Resolved(hit[0], e, hit[1], res)
    target = exact[0] if exact else min(same, key=lambda e: abs(e.res - res))
    if download:
        try:
            return Resolved(D.fetch(target, progress=progress, warn=warn), target, "download", res)
        except WeightsError as e:
            reason = str(e)
    else:
        reason = "downloads disabled"
    raise WeightsError(
        f"no pretrained weights for alpha {alpha:g} res {res} on this machine ({reason}): run "
        f"`mobilenet-edge weights download {target.name}` where there is a network "
        f"(and copy {D.cache_dir()} here), or pass --weights random for random weights on purpose")

