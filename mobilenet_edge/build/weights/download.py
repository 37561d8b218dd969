"""Download, check and cache the registry's files (:mod:`.registry`) with pooch; the shipped copies.

- Cache: ``$MOBILENET_EDGE_CACHE/weights`` if set, else ``platformdirs.user_cache_dir("mobilenet-edge")/weights``
  (``~/.cache/mobilenet-edge/weights`` on Linux); one file per entry, ``<source>/<file>`` (the extracted
  ``.tflite`` or the ``.h5``), plus ``sha256.json`` (trust-on-first-use records).
- Base URL: ``$MOBILENET_EDGE_WEIGHTS_URL`` replaces each source's base URL (a mirror with the same
  layout, e.g. ``mobilenet_v1_2018_08_02/mobilenet_v1_0.5_160_quant.tgz`` and
  ``mobilenet/mobilenet_5_0_160_tf.h5``; our tests point it at a local server).
- Downloads go through ``pooch.retrieve`` (requests, a progress bar, sha256 check of the archive where
  pinned, ``pooch.Untar`` for the ``.tflite`` inside) into a temporary folder inside the cache; the
  kept file is checked against its pinned sha256 (else the one recorded at its first download) and
  moved into place with one ``os.replace``. A failure at any step leaves the cache as it was (the
  old entry, if any, intact). A per-entry lock file (``fcntl.flock``) makes concurrent processes
  download once; the others wait and then use the file.
"""

from __future__ import annotations

import contextlib
import json
import os
import tarfile
import tempfile
import zlib
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from ...core.bundle import sha256_file, write_json_atomic
from ...core.errors import WeightsError
from .registry import Entry

ENV_CACHE = "MOBILENET_EDGE_CACHE"
ENV_URL = "MOBILENET_EDGE_WEIGHTS_URL"
TOFU_FILE = "sha256.json"
#: package data: Google's three reference files and their LICENSE
SHIPPED_DIR = Path(__file__).with_name("data")

Progress = Callable[[int, int], None]  # (bytes done, bytes total; 0 when unknown)


def cache_dir() -> Path:
    """The weights cache folder (not created here)."""
    root = os.environ.get(ENV_CACHE)
    if not root:
        try:
            import platformdirs
        except ImportError:  # a torch-free install (no export extra) still lists what is cached
            root = str(Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache") / "mobilenet-edge")
        else:
            root = platformdirs.user_cache_dir("mobilenet-edge", appauthor=False)
    return Path(root).expanduser() / "weights"


def url_for(entry: Entry) -> str:
    """The URL to download ``entry`` from: ``$MOBILENET_EDGE_WEIGHTS_URL`` + path, else the published URL."""
    base = os.environ.get(ENV_URL)
    return (base.rstrip("/") + "/" + entry.path) if base else entry.url


def cache_path(entry: Entry) -> Path:
    """Where ``entry``'s file is kept in the cache (it may not exist)."""
    return cache_dir() / entry.source / entry.filename


def shipped_path(entry: Entry) -> Path | None:
    """The copy shipped inside the package, if this entry is one of the three (sha256 checked)."""
    p = SHIPPED_DIR / entry.filename
    if entry.source != "google-quant" or entry.sha256 is None or not p.is_file():
        return None
    return p if sha256_file(p) == entry.sha256 else None


def _records() -> dict:
    p = cache_dir() / TOFU_FILE
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return {}


def expected_sha256(entry: Entry) -> tuple[str | None, str]:
    """(sha256 the kept file must have, where it comes from: "pinned" | "first download" | "unknown")."""
    if entry.sha256:
        return entry.sha256, "pinned"
    rec = _records().get(entry.name)
    return (rec["sha256"], "first download") if rec else (None, "unknown")


def cached(entry: Entry, *, warn: Callable[[str], None] | None = None) -> Path | None:
    """The cached file of ``entry`` if present and matching its expected sha256, else None (a file
    that does not match is reported through ``warn`` and will be downloaded again)."""
    p = cache_path(entry)
    if not p.is_file():
        return None
    want, how = expected_sha256(entry)
    if want is not None and sha256_file(p) != want:
        if warn:
            warn(f"cached {p} does not match its {how} sha256: it will be downloaded again")
        return None
    return p


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` (created) for the ``with`` block; no-op where fcntl is missing."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no cross-process lock
        yield
        return
    with open(path, "a+b") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class _Bar:
    """The tqdm-like object pooch drives (``total``, ``update``, ``reset``, ``close``) -> ``progress``."""

    def __init__(self, progress: Progress):
        self.progress, self.total, self.n = progress, 0, 0

    def update(self, n: int) -> None:
        self.n += n
        self.progress(min(self.n, self.total) if self.total else self.n, self.total)

    def reset(self) -> None:
        self.n = 0

    def close(self) -> None:
        pass


def fetch(entry: Entry, *, progress: Progress | None = None, warn: Callable[[str], None] | None = None) -> Path:
    """The cached file of ``entry``, downloaded (and extracted) first if needed.

    Args:
        entry: a registry entry.
        progress: called with (bytes done, bytes total) while downloading.
        warn: gets the one-line notes (trust on first use, a cached file that no longer matches).
    Returns:
        Path of the ``.tflite`` / ``.h5`` in the cache.
    Raises:
        WeightsError: no network / server error (the URL named), a sha256 mismatch, a cut-short body,
            a corrupt archive, a full disk; the cache is left as it was.
    """
    warn = warn or (lambda m: None)
    hit = cached(entry, warn=warn)
    if hit is not None:
        return hit
    dst = cache_path(entry)
    url = url_for(entry)
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise WeightsError(f"cannot create the weights cache {dst.parent}: {e.strerror or e}") from None
    with _lock(dst.parent / f".{entry.filename}.lock"):
        hit = cached(entry)  # another process may have finished it while we waited
        if hit is not None:
            return hit
        try:
            with tempfile.TemporaryDirectory(prefix=".download-", dir=dst.parent) as tmp:
                got = _download(entry, url, Path(tmp), progress)
                digest = sha256_file(got)
                want, how = expected_sha256(entry)
                if want is not None and digest != want:
                    raise WeightsError(f"{entry.filename} from {url} has sha256 {digest[:16]}..., its {how} "
                                       f"sha256 is {want[:16]}...: refused, the cache is unchanged")
                os.replace(got, dst)
        except OSError as e:
            raise WeightsError(f"cannot write {entry.filename} to the weights cache {dst.parent}: "
                               f"{e.strerror or e}; the cache is unchanged") from None
        if want is None:
            _record(entry, url, digest)
            warn(f"{entry.name}: no published sha256; recorded {digest} of this first download in "
                 f"{cache_dir() / TOFU_FILE} (trust on first use: later downloads must match it)")
    return dst


def _record(entry: Entry, url: str, digest: str) -> None:
    recs = _records()
    recs[entry.name] = {"sha256": digest, "url": url,
                        "recorded": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
    write_json_atomic(cache_dir() / TOFU_FILE, recs)


def _download(entry: Entry, url: str, tmp: Path, progress: Progress | None) -> Path:
    """pooch.retrieve into ``tmp`` (archive sha256 checked where pinned; the member untarred); the file."""
    import pooch
    import requests

    logger = pooch.get_logger()
    level = logger.level
    logger.setLevel("WARNING")  # pooch's own INFO lines ("Downloading ...", the hash) would repeat ours
    known = entry.archive_sha256 if entry.member else (entry.archive_sha256 or entry.sha256)
    processor = pooch.Untar(members=[entry.member], extract_dir=str(tmp / "x")) if entry.member else None
    try:
        out = pooch.retrieve(url, known_hash=f"sha256:{known}" if known else None, fname=Path(entry.path).name,
                             path=tmp, processor=processor, progressbar=_Bar(progress) if progress else False)
    except requests.HTTPError as e:
        code = e.response.status_code if e.response is not None else "?"
        reason = e.response.reason if e.response is not None else ""
        raise WeightsError(f"download failed: {url}: HTTP {code} {reason}".rstrip()) from None
    except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError) as e:
        raise WeightsError(f"download of {url} was cut short ({type(e).__name__}); nothing kept") from None
    except requests.ConnectionError:
        raise WeightsError(f"cannot download {url}: no network or the server is unreachable") from None
    except requests.RequestException as e:
        raise WeightsError(f"cannot download {url}: {type(e).__name__}: {e}") from None
    except ValueError as e:  # pooch: hash mismatch
        if "hash" not in str(e).lower():
            raise
        raise WeightsError(f"the download from {url} does not match its published sha256: refused, "
                           "the cache is unchanged") from None
    except (tarfile.TarError, EOFError, zlib.error) as e:
        raise WeightsError(f"{url} is not a readable .tgz archive ({e}); nothing kept") from None
    finally:
        logger.setLevel(level)
    if not entry.member:
        return Path(out)
    hits = [Path(p) for p in out if Path(p).name == entry.member]
    if not hits:
        raise WeightsError(f"{url} holds no {entry.member} (found: {', '.join(Path(p).name for p in out) or 'nothing'})")
    return hits[0]
