""":class:`Bundle`: an exported bundle folder as a typed value (what ``export`` returns, what ``load`` and
``bench`` take). No torch."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

from ..core.bundle import FILE_FP32, FILE_INT8, FILE_TFLITE, FILE_TFLITE_INT8
from ..core.labels import read_labels
from ..core.manifest import Manifest


@dataclass(frozen=True)
class Bundle:
    """A bundle folder ``OUT/<name>/`` (docs/bundle-format.md) and its manifest.

    A ``Bundle`` is path-like (``os.fspath(bundle)`` is its folder), so it goes wherever a path does.

    Attributes:
        path: the bundle folder, e.g. ``export/mobilenet_v1_0.50_160``.
        manifest: its :class:`~mobilenet_edge.core.manifest.Manifest` (variant, weights, preprocessing,
            labels, files with sha256 and size, parity, quantization record).
        seconds: wall time of the export that wrote it (s); None for a bundle opened from disk.
    """

    path: Path
    manifest: Manifest
    seconds: Optional[float] = None

    @classmethod
    def open(cls, path: str | os.PathLike) -> Bundle:
        """The bundle in folder ``path``.

        Raises:
            MobilenetEdgeError: no ``manifest.json`` there, or not a mobilenet-edge manifest.
        """
        p = Path(path)
        return cls(p, Manifest.read(p))

    def __fspath__(self) -> str:
        return str(self.path)

    def __repr__(self) -> str:
        took = f", {self.seconds:.1f} s" if self.seconds is not None else ""
        return f"Bundle({str(self.path)!r}, models={list(self.models)}{took})"

    @property
    def name(self) -> str:
        """The bundle's name, e.g. ``mobilenet_v1_0.50_160``."""
        return self.manifest.name or self.path.name

    @property
    def models(self) -> dict[str, Path]:
        """Model files present, by file name (``model.onnx``, ``model.int8.onnx``, ``model.tflite``,
        ``model.int8.tflite``), in that order."""
        names = (FILE_FP32, FILE_INT8, FILE_TFLITE, FILE_TFLITE_INT8)
        return {n: self.path / n for n in names if (self.path / n).is_file()}

    @property
    def onnx(self) -> Optional[Path]:
        """``model.onnx`` (fp32), or None."""
        return self.models.get(FILE_FP32)

    @property
    def int8_onnx(self) -> Optional[Path]:
        """``model.int8.onnx`` (QDQ int8), or None."""
        return self.models.get(FILE_INT8)

    @property
    def tflite(self) -> Optional[Path]:
        """``model.tflite`` (fp32), or None."""
        return self.models.get(FILE_TFLITE)

    @property
    def int8_tflite(self) -> Optional[Path]:
        """``model.int8.tflite``, or None."""
        return self.models.get(FILE_TFLITE_INT8)

    @property
    def labels(self) -> list[str]:
        """One label per output index, from the bundle's labels file."""
        return read_labels(self.path / self.manifest.labels_file)


#: what ``load`` and ``bench`` accept as a model: a :class:`Bundle`, a bundle folder, or a .onnx/.tflite file
ModelLike = Union[Bundle, str, os.PathLike]
