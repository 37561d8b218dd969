"""Google's published MobileNet V1 weights as data: one :class:`Entry` per (source, alpha, res).

Three sources, 16 grid points each (alpha 1.0/0.75/0.5/0.25 x res 224/192/160/128):

- ``google-quant``: TF-slim quantization-aware trained, uint8 ``.tflite`` inside a ``.tgz``
  (``mobilenet_v1_2018_08_02/mobilenet_v1_{a}_{r}_quant.tgz``).
- ``google-float``: TF-slim float, float32 ``.tflite`` inside a ``.tgz``
  (``mobilenet_v1_2018_08_02/mobilenet_v1_{a}_{r}.tgz``; the TF-slim page first linked
  ``mobilenet_v1_2018_02_22/``, its current version and TensorFlow's build files link ``2018_08_02/``).
- ``keras``: Keras applications float weights, ``mobilenet_{1_0|7_5|5_0|2_5}_{r}_tf.h5`` (BN not
  folded, eps 1e-3, 1000 classes).

Sources of the numbers (nothing here is measured by this package):

- URLs and top-1/top-5: tensorflow/models ``research/slim/nets/mobilenet_v1.md`` (the table after the
  "August 2, 2018" revision; quantized figures are of the ``.tflite`` itself) and keras
  ``applications/mobilenet.py`` (``BASE_WEIGHT_PATH``, ``mobilenet_%s_%d_tf.h5``).
- Archive sha256 of ``google-quant`` and ``google-float`` 1.0/224: TensorFlow's
  ``tensorflow/workspace.bzl`` (``tflite_mobilenet_quant``, ``tflite_mobilenet_float``).
- File sha256 and size of ``google-quant`` 0.25/128, 0.5/160, 0.75/192: the extracted ``.tflite``
  files in ../shared/data/reference (shipped with the package, see :mod:`.shipped`).
- Keras: no per-file accuracy is published; the Keras docstring quotes the paper's Tables 6 and 7
  (alpha x 224 and 1.0 x res), recorded with that source.

Everything else is unknown and left None: its first download is recorded in the cache (trust on
first use, :mod:`.download`).
"""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass

from ...core.errors import UsageError

ALPHAS: tuple[float, ...] = (1.0, 0.75, 0.5, 0.25)
RESOLUTIONS: tuple[int, ...] = (224, 192, 160, 128)

GOOGLE_BASE = "https://storage.googleapis.com/download.tensorflow.org/models/"
KERAS_BASE = "https://storage.googleapis.com/tensorflow/keras-applications/"
TFSLIM_PAGE = "tensorflow/models research/slim/nets/mobilenet_v1.md"
PAPER_VIA_KERAS = "paper Tables 6/7 (Howard et al. 2017), quoted in keras applications/mobilenet.py"

#: source name -> (description, trained, format)
SOURCES: dict[str, tuple[str, str, str]] = {
    "google-quant": ("TF-slim quantization-aware trained .tflite (uint8)", "qat", "tflite"),
    "google-float": ("TF-slim float .tflite (float32)", "float", "tflite"),
    "keras": ("Keras applications float .h5 (BN not folded)", "float", "h5"),
}

# TF-slim table (2018_08_02 revision): (alpha, res) -> (float top-1, top-5, quant top-1, top-5), percent
_TFSLIM: dict[tuple[float, int], tuple[float, float, float, float]] = {
    (1.0, 224): (70.9, 89.9, 70.1, 88.9), (1.0, 192): (70.0, 89.2, 69.2, 88.3),
    (1.0, 160): (68.0, 87.7, 67.2, 86.7), (1.0, 128): (65.2, 85.8, 63.4, 84.2),
    (0.75, 224): (68.4, 88.2, 66.8, 87.0), (0.75, 192): (67.2, 87.3, 66.1, 86.4),
    (0.75, 160): (65.3, 86.0, 62.3, 83.8), (0.75, 128): (62.1, 83.9, 55.8, 78.8),
    (0.5, 224): (63.3, 84.9, 60.7, 83.2), (0.5, 192): (61.7, 83.6, 60.0, 82.2),
    (0.5, 160): (59.1, 81.9, 57.7, 80.4), (0.5, 128): (56.3, 79.4, 54.5, 77.7),
    (0.25, 224): (49.8, 74.2, 48.0, 72.8), (0.25, 192): (47.7, 72.3, 46.0, 71.2),
    (0.25, 160): (45.5, 70.3, 43.4, 68.5), (0.25, 128): (41.5, 66.3, 39.5, 64.4),
}
# paper Table 6 (alpha at 224) and Table 7 (1.0 at res), top-1 percent
_PAPER: dict[tuple[float, int], float] = {
    (1.0, 224): 70.6, (0.75, 224): 68.4, (0.5, 224): 63.7, (0.25, 224): 50.6,
    (1.0, 192): 69.1, (1.0, 160): 67.2, (1.0, 128): 64.4,
}
# archive sha256 pinned by TensorFlow's workspace.bzl
_ARCHIVE_SHA256: dict[tuple[str, float, int], str] = {
    ("google-quant", 1.0, 224): "d32432d28673a936b2d6281ab0600c71cf7226dfe4cdcef3012555f691744166",
    ("google-float", 1.0, 224): "2fadeabb9968ec6833bee903900dda6e61b3947200535874ce2fe42a8493abc0",
}
# extracted .tflite (sha256, bytes): the reference files in ../shared/data/reference
_FILE_SHA256: dict[tuple[str, float, int], tuple[str, int]] = {
    ("google-quant", 0.25, 128): ("cb273c23ee76374b05b9583177e28aa19744858a7679c56a250e83d0333da785", 525598),
    ("google-quant", 0.5, 160): ("3cc6d2ca460abd2e0f699a6d0d2550c6b61c6e3b0e27a3616e384ea74cb86f43", 1392846),
    ("google-quant", 0.75, 192): ("41daeb22fdcf947e0e5ec32373aa9df7c31f3ef45dbd0ef7b5940fbce3c20f6a", 2652542),
}
# downloaded-file sizes seen in public logs of the same URL (bytes)
_DOWNLOAD_SIZE: dict[tuple[str, float, int], int] = {("keras", 1.0, 224): 17225924}


@dataclass(frozen=True)
class Entry:
    """One published weights file.

    Attributes:
        source: ``google-quant`` | ``google-float`` | ``keras``.
        alpha, res: the grid point it was trained at (res in pixels).
        path: download path relative to the source's base URL (the mirror layout).
        base: the source's base URL (``MOBILENET_EDGE_WEIGHTS_URL`` replaces it).
        member: file inside the archive (None: the download is the file).
        filename: the file kept in the cache.
        archive_sha256: sha256 of the download where published, else None.
        sha256: sha256 of the kept file (extracted ``.tflite`` / ``.h5``) where known, else None.
        size: bytes of the kept file where known; download_size: bytes of the download where known.
        top1, top5: published ImageNet accuracy in percent (None: not published); accuracy_source says where.
        trained: ``qat`` or ``float``.
    """

    source: str
    alpha: float
    res: int
    path: str
    base: str
    member: str | None
    filename: str
    archive_sha256: str | None
    sha256: str | None
    size: int | None
    download_size: int | None
    top1: float | None
    top5: float | None
    accuracy_source: str | None
    trained: str

    @property
    def name(self) -> str:
        """``source/alpha/res``, e.g. ``google-quant/0.5/160``, ``keras/1.0/224``."""
        return f"{self.source}/{_tfslim_alpha(self.alpha)}/{self.res}"

    @property
    def url(self) -> str:
        """The published URL."""
        return self.base + self.path

    def to_dict(self) -> dict:
        return {**asdict(self), "name": self.name, "url": self.url}


def _tfslim_alpha(alpha: float) -> str:
    return f"{alpha:g}" if alpha != 1.0 else "1.0"  # mobilenet_v1_1.0_224, _0.75_, _0.5_, _0.25_


def _keras_alpha(alpha: float) -> str:
    return {1.0: "1_0", 0.75: "7_5", 0.5: "5_0", 0.25: "2_5"}[alpha]


def _entry(source: str, alpha: float, res: int) -> Entry:
    key = (source, alpha, res)
    f_sha, f_size = _FILE_SHA256.get(key, (None, None))
    if source == "keras":
        fname = f"mobilenet_{_keras_alpha(alpha)}_{res}_tf.h5"
        top1 = _PAPER.get((alpha, res))
        return Entry(source, alpha, res, "mobilenet/" + fname, KERAS_BASE, None, fname, None, None, None,
                     _DOWNLOAD_SIZE.get(key), top1, None, PAPER_VIA_KERAS if top1 else None, "float")
    quant = source == "google-quant"
    stem = f"mobilenet_v1_{_tfslim_alpha(alpha)}_{res}" + ("_quant" if quant else "")
    f1, f5, q1, q5 = _TFSLIM[(alpha, res)]
    return Entry(source, alpha, res, f"mobilenet_v1_2018_08_02/{stem}.tgz", GOOGLE_BASE, stem + ".tflite",
                 stem + ".tflite", _ARCHIVE_SHA256.get(key), f_sha, f_size, None, q1 if quant else f1,
                 q5 if quant else f5, TFSLIM_PAGE, "qat" if quant else "float")


#: every entry, in (source, alpha descending, res descending) order
REGISTRY: tuple[Entry, ...] = tuple(_entry(s, a, r) for s in SOURCES for a in ALPHAS for r in RESOLUTIONS)


def check_source(name: str) -> str:
    """``name`` if it is a source; else UsageError naming the close ones (or all).

    Raises:
        UsageError: unknown source name.
    """
    if name in SOURCES:
        return name
    close = difflib.get_close_matches(name, list(SOURCES) + ["random"], n=3, cutoff=0.5)
    hint = f"did you mean {' or '.join(close)}?" if close else f"known: {', '.join(SOURCES)}, random, or a file path"
    raise UsageError(f"unknown weights name {name!r}: {hint}")


def lookup(source: str, alpha: float, res: int) -> Entry:
    """The entry of ``source`` at (alpha, res).

    Raises:
        UsageError: unknown source (close names listed), or alpha/res not in the grid (the grid listed).
    """
    check_source(source)
    for e in REGISTRY:
        if e.source == source and abs(e.alpha - alpha) < 1e-9 and e.res == res:
            return e
    raise UsageError(
        f"{source} has no weights for alpha {alpha:g} at res {res}: it has alpha "
        f"{', '.join(f'{a:g}' for a in ALPHAS)} x res {', '.join(map(str, RESOLUTIONS))}"
    )


def entries_for_alpha(source: str, alpha: float) -> list[Entry]:
    """Entries of ``source`` with this alpha (any res), res descending."""
    return [e for e in REGISTRY if e.source == source and abs(e.alpha - alpha) < 1e-9]


def parse_name(text: str) -> tuple[str, float | None, int | None]:
    """``source``, ``source/alpha/res`` or ``source/alpha`` -> (source, alpha or None, res or None).

    Raises:
        UsageError: unknown source, or a part that is not a number.
    """
    parts = text.split("/")
    source = check_source(parts[0])
    try:
        alpha = float(parts[1]) if len(parts) > 1 else None
        res = int(parts[2]) if len(parts) > 2 else None
    except ValueError:
        raise UsageError(f"bad weights name {text!r}: expected SOURCE or SOURCE/ALPHA/RES, "
                         f"e.g. google-quant/0.5/160") from None
    if len(parts) > 3:
        raise UsageError(f"bad weights name {text!r}: expected SOURCE or SOURCE/ALPHA/RES")
    return source, alpha, res
