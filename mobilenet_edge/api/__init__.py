"""The Python API: ``export`` / ``quantize_bundle`` / ``load`` / ``bench`` (``import mobilenet_edge as me``; docs/api.md).

A thin layer over the pipeline's public entries, like ``cli/``: ``export`` imports the torch side
(``build/``) inside the call; everything else here is torch-free, so ``load`` and ``bench`` run on a Pi.
"""

from __future__ import annotations

from .benchmark import BenchResult, bench
from .bundle import Bundle
from .classifier import Classifier, Prediction, load
from .exporting import create_model, export, quantize_bundle

__all__ = ["BenchResult", "Bundle", "Classifier", "Prediction", "bench", "create_model", "export", "load", "quantize_bundle"]
