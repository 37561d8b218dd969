"""Calibration and evaluation data for quantization (no torch): ORT ``CalibrationDataReader``s that
stream image files through a model's :class:`~mobilenet_edge.core.images.Preprocessing` (or feed arrays), synthetic
inputs for random-weight models, the deterministic calibration/evaluation split of one folder, and
the labels of evaluation images."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Callable

import numpy as np

from ..core.errors import UsageError
from ..core.images import Preprocessing, load, skipped_message

# ----------------------------------------------------------------------------------------------
# calibration data
# ----------------------------------------------------------------------------------------------


def _ort_reader_base():
    from onnxruntime.quantization import CalibrationDataReader

    return CalibrationDataReader


class Warnings(list):
    """Collects warnings and prints each on stderr as one line (once: recipe bias correction reads the
    calibration images twice, so a skipped file would otherwise be reported twice)."""

    def __call__(self, msg: str) -> None:
        if msg in self:
            return
        self.append(msg)
        print(f"warning: {msg}", file=sys.stderr, flush=True)


def make_image_reader(
    paths: Sequence[Path],
    prep: Preprocessing,
    *,
    input_name: str = "input",
    warn: Callable[[str], None] | None = None,
    progress=None,
    description: str = "calibrating",
):
    """A ``CalibrationDataReader`` streaming ``paths`` one image at a time as ``{input_name: (1,3,res,res)
    float32}``; undecodable files are skipped with a warning naming them.

    Args:
        progress: a ``rich.progress.Progress`` (:func:`mobilenet_edge.core.progress.progress_bar`) that gets one
            task named ``description``, advanced per file; None draws nothing.
        warn: called with one line per undecodable file.
    Returns:
        An ORT ``CalibrationDataReader`` with ``used`` and ``skipped`` (lists of paths) and ``rewind()``.
    """
    base = _ort_reader_base()

    class ImageFolderReader(base):
        def __init__(self) -> None:
            self.paths = list(paths)
            self.used: list[Path] = []
            self.skipped: list[Path] = []
            self._i = 0
            self._task = progress.add_task(description, total=len(self.paths)) if progress else None

        def __len__(self) -> int:
            return len(self.paths)

        def rewind(self) -> None:
            self._i = 0
            self.used, self.skipped = [], []
            if progress is not None and self._task is not None:
                progress.reset(self._task)

        def get_next(self) -> dict | None:
            while self._i < len(self.paths):
                p = self.paths[self._i]
                self._i += 1
                if progress is not None:
                    progress.advance(self._task)
                try:
                    x = load(p, prep)
                except UsageError as e:
                    self.skipped.append(p)
                    if warn is not None:  # not `if warn`: a Warnings collector is an (empty) list
                        warn(skipped_message(p, e))
                    continue
                self.used.append(p)
                return {input_name: x[None]}
            return None

    return ImageFolderReader()


def make_array_reader(arrays: np.ndarray | Sequence[np.ndarray], *, input_name: str = "input"):
    """A ``CalibrationDataReader`` over (N, 3, H, W) float32 arrays (one image per ``get_next``)."""
    base = _ort_reader_base()
    data = [np.asarray(a, dtype=np.float32) for a in arrays]

    class ArrayReader(base):
        def __init__(self) -> None:
            self._i = 0
            self.used = list(range(len(data)))
            self.skipped: list = []

        def __len__(self) -> int:
            return len(data)

        def rewind(self) -> None:
            self._i = 0

        def get_next(self) -> dict | None:
            if self._i >= len(data):
                return None
            x = data[self._i]
            self._i += 1
            return {input_name: x[None] if x.ndim == 3 else x}

    return ArrayReader()


def synthetic_images(n: int, prep: Preprocessing, *, seed: int = 0) -> np.ndarray:
    """``n`` uniform-noise pixel images in [0, 255] through ``prep``'s normalisation.

    Returns:
        (n, 3, res, res) float32 (NCHW). For models with random weights only: their int8 accuracy
        means nothing.
    """
    rng = np.random.default_rng(seed)
    px = rng.integers(0, 256, size=(n, prep.res, prep.res, 3)).astype(np.float32)
    x = (px - np.asarray(prep.mean, np.float32)) / np.asarray(prep.std, np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32)


def split_paths(paths: Sequence[Path], *, fold: int = 0) -> tuple[list[Path], list[Path]]:
    """Deterministic disjoint halves of one folder: sorted paths, even positions (0, 2, 4, ...)
    calibrate and odd positions evaluate (``fold=1`` swaps them, for 2-fold cross evaluation).

    Interleaving keeps both halves spread over the folder (ImageNet file names sort by class).
    """
    ps = sorted(paths)
    even, odd = ps[0::2], ps[1::2]
    return (even, odd) if fold == 0 else (odd, even)


# ----------------------------------------------------------------------------------------------
# labels
# ----------------------------------------------------------------------------------------------

def resolve_labels(
    paths: Sequence[Path], root: Path | None, labels_csv: str | Path | None = None, *,
    classes: int | None = None, class_labels: Sequence[str] | None = None,
) -> tuple[dict[Path, int], str]:
    """Class index of each evaluation image when it can be known.

    Delegates to :func:`mobilenet_edge.core.labels.ground_truth` (shared with ``eval``): ``labels_csv``
    or a ``labels.csv`` in ``root`` (``file,imagenet_index``), class folders (synset folders in the
    standard sorted synset order, folders named by the model's labels, else sorted position), or
    ``nXXXXXXXX_*`` file names.

    Args:
        classes: classes the model scores, background excluded (None: 1000, ImageNet).
        class_labels: the model's labels in index order, background excluded, or None.
    Returns:
        (path -> index for the labelled images among ``paths``, description of the source or "none").
    Raises:
        UsageError: an explicit ``labels_csv``, or for an ImageNet model ``root``'s own ``labels.csv``, that is
            missing or malformed (e.g. an index out of range). A ``labels.csv`` beside the images of a model of
            other classes (e.g. ImageNet indices for a 5-class model) is not its ground truth: "none".
    """
    from ..core.labels import ground_truth

    if root is None:
        return {}, "none"
    imagenet = classes in (None, 1000)
    try:
        gt, source = ground_truth(Path(root), Path(labels_csv) if labels_csv is not None else None,
                                  classes=classes or 1000, labels=class_labels)
    except UsageError:
        if labels_csv is not None or (imagenet and (Path(root) / "labels.csv").is_file()):
            raise  # labels were given (or a labels.csv is there) but are wrong: say so, do not drop them
        return {}, "none"
    by_path = {p.resolve(): i for p, i in gt.items()}
    out = {p: by_path[p.resolve()] for p in paths if p.resolve() in by_path}
    return out, source if out else "none"
