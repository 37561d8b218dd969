"""``load`` -> :class:`Classifier`: a model file with its preprocessing and labels, predicting on image
files, Pillow images or numpy pixel arrays. No torch (the Raspberry Pi side).

Everything runs through the package's one implementation of each step: :func:`~mobilenet_edge.runtime.load.open_model`
(which file of a bundle, preprocessing, labels), :class:`~mobilenet_edge.runtime.runner.Runner` (ONNX Runtime,
OpenVINO, LiteRT; quantized I/O), :mod:`mobilenet_edge.core.images` (decoding and preprocessing) and
:func:`~mobilenet_edge.runtime.scores.top_k`.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Optional, Union

import numpy as np
from PIL import Image

from ..core import images as imglib
from ..core.errors import MobilenetEdgeError, UsageError
from ..core.images import Preprocessing
from ..core.manifest import Manifest
from ..runtime.evaluate import precision_of, random_weights_warning, weights_source
from ..runtime.load import open_model
from ..runtime.runner import Runner
from ..runtime.scores import top_k as _top_k
from .bundle import ModelLike

#: one image: a file path, a Pillow image, or an (H, W, 3) / (H, W) uint8 RGB / greyscale pixel array
ImageLike = Union[str, os.PathLike, Image.Image, np.ndarray]

#: images preprocessed and run per call of the runtime (bounds memory for long lists)
CHUNK = 32


class Prediction(NamedTuple):
    """One ranked class: ``label`` (from the model's labels) and ``prob`` (softmax probability, 0..1).
    A plain ``(label, prob)`` tuple: ``for label, prob in clf.predict(img)`` works."""

    label: str
    prob: float


@dataclass
class Classifier:
    """A loaded model, ready to classify images (what :func:`load` returns).

    Attributes:
        runner: the :class:`~mobilenet_edge.runtime.runner.Runner` (``runner.run(x)`` takes preprocessed
            (N, 3, res, res) or (N, res, res, 3) float32 batches).
        preprocessing: how pixels become the input (:class:`~mobilenet_edge.core.images.Preprocessing`:
            res, mean, std, crop, resize, layout; from the bundle's manifest or the model's metadata).
        labels: one label per output index (``len(labels) == num_classes``).
        manifest: the bundle's :class:`~mobilenet_edge.core.manifest.Manifest`, None for a lone file.
        precision: "fp32" or "int8" (the bundle's record, else the file's operators).
    """

    runner: Runner
    preprocessing: Preprocessing
    labels: list[str]
    manifest: Optional[Manifest] = None
    precision: str = "fp32"

    @property
    def path(self) -> Path:
        """The model file that runs (e.g. ``export/mobilenet_v1_0.50_160/model.int8.onnx``)."""
        return self.runner.path

    @property
    def num_classes(self) -> int:
        return self.runner.num_classes

    @property
    def res(self) -> int:
        """Input side in pixels."""
        return self.preprocessing.res

    @property
    def runtime(self) -> str:
        """"onnxruntime", "openvino" or "litert" (:mod:`mobilenet_edge.runtime.names`)."""
        return self.runner.runtime

    def __repr__(self) -> str:
        return (f"Classifier({str(self.path)!r}, {self.precision}, {self.runtime}, res {self.res}, "
                f"{self.num_classes} classes)")

    def scores(self, images: Iterable[ImageLike]) -> np.ndarray:
        """Class probabilities of several images.

        Args:
            images: paths, Pillow images or uint8 pixel arrays (see :func:`to_input`).
        Returns:
            (N, num_classes) float32 probabilities (rows sum to 1; Google's ``.tflite`` files output
            probabilities already, logits get a softmax).
        Raises:
            UsageError: a missing or undecodable file, an unsupported image type or array shape/dtype.
            MobilenetEdgeError: the model gave non-finite scores.
        """
        items = list(images)
        out = [self.runner.probabilities(np.stack([to_input(im, self.preprocessing) for im in items[i : i + CHUNK]]))
               for i in range(0, len(items), CHUNK)]
        probs = np.concatenate(out) if out else np.zeros((0, self.num_classes), np.float32)
        if not np.all(np.isfinite(probs)):
            raise MobilenetEdgeError(f"{self.path}: the model gave non-finite scores")
        return probs

    def predict(self, image: ImageLike, top_k: int = 5) -> list[Prediction]:
        """The ``top_k`` most probable classes of one image, best first.

        Args:
            image: a path, a Pillow image, or an (H, W, 3) / (H, W) uint8 pixel array (RGB / greyscale).
            top_k: 1 <= top_k <= num_classes.
        Returns:
            ``[(label, prob), ...]`` (:class:`Prediction`), probabilities in 0..1, ties to the lower index.
        Raises:
            UsageError: bad ``top_k``, a missing or undecodable file, an unsupported image.
        """
        return self.predict_batch([image], top_k=top_k)[0]

    def predict_batch(self, images: Iterable[ImageLike], top_k: int = 5) -> list[list[Prediction]]:
        """:meth:`predict` for several images (run in batches): one list of predictions per image."""
        self._check_top_k(top_k)
        images = list(images)
        idx, val = _top_k(self.scores(images), top_k) if images else ([], [])
        return [[Prediction(self.labels[int(i)], float(v)) for i, v in zip(ii, vv)] for ii, vv in zip(idx, val)]

    def _check_top_k(self, k: Any) -> None:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= self.num_classes:
            raise UsageError(f"top_k must be between 1 and the class count {self.num_classes}, got {k!r}")


def to_input(image: ImageLike, prep: Preprocessing) -> np.ndarray:
    """One image -> the model input for it, preprocessed as ``prep`` says (one pipeline:
    :mod:`mobilenet_edge.core.images`).

    Args:
        image: a file path (decoded with EXIF orientation), a Pillow image (any mode), or a numpy array of
            pixels: (H, W, 3) RGB or (H, W) greyscale, uint8 (0..255) -- e.g. ``np.asarray(pil_image)``;
            OpenCV frames are BGR: pass ``frame[..., ::-1]``.
    Returns:
        (3, res, res) float32 for NCHW models, (res, res, 3) for NHWC.
    Raises:
        UsageError: a missing or undecodable file, another type, or an array of another shape or dtype.
    """
    if isinstance(image, (str, os.PathLike)):
        return imglib.load(Path(image), prep)
    if isinstance(image, Image.Image):
        return imglib.preprocess(image, prep)
    if isinstance(image, np.ndarray):
        shape_ok = image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)
        if image.dtype != np.uint8 or not shape_ok or min(image.shape[:2]) < 1:
            raise UsageError(f"an image array must be (H, W, 3) or (H, W) uint8 pixels, got {image.shape} "
                             f"{image.dtype}; preprocessed tensors go to Classifier.runner.run()")
        return imglib.preprocess(Image.fromarray(np.ascontiguousarray(image)), prep)
    raise UsageError(f"an image must be a path, a PIL.Image or a numpy array, got {type(image).__name__}")


def load(model: ModelLike, *, int8: bool = False, format: Optional[str] = None, runtime: Optional[str] = None,
         threads: int = 1, labels: Optional[str | os.PathLike] = None) -> Classifier:
    """Open a bundle (or a lone ``.onnx`` / ``.tflite`` file) for prediction; never imports torch.

    Args:
        model: a :class:`~mobilenet_edge.api.bundle.Bundle`, a bundle folder, or a model file (Google's
            ``.tflite`` files work: TF-slim preprocessing and ImageNet labels are assumed).
        int8: the bundle's int8 model (``model.int8.onnx``; ``model.int8.tflite`` with ``format="tflite"``).
        format: "onnx" or "tflite" inside a bundle (default: ONNX when present).
        runtime: "ort" / "onnxruntime", "openvino" (``.onnx``) or "litert" (``.tflite``); default: the file's.
        threads: runtime threads (>= 1).
        labels: a labels file (one label per output index) replacing the model's.
    Returns:
        :class:`Classifier`. A bundle with random weights gives a ``UserWarning`` (its predictions mean nothing).
    Raises:
        UsageError: a missing path, a bad option, ``int8`` with a lone fp32 file, a labels count mismatch.
        MobilenetEdgeError: a bundle without the requested model (e.g. ``int8=True`` before quantizing), a
            corrupt model.
    """
    loaded = open_model(os.fspath(model), int8=int8, fmt=format, threads=threads, labels_file=labels,
                        runtime=runtime)
    if weights_source(loaded.runner, loaded.manifest) == "random":
        warnings.warn(random_weights_warning(loaded.manifest), UserWarning, stacklevel=2)
    return Classifier(loaded.runner, loaded.prep, loaded.labels, loaded.manifest,
                      precision_of(loaded.runner, loaded.manifest, int8))
