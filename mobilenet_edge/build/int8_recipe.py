"""Which int8 recipe an ``--int8`` export (or ``quantize`` on a bundle) uses, and the source QAT ``.tflite``
whose activation ranges the ``qat-ranges`` recipe takes (issue #22).

The rule (docs/quantize.md):

- ``--recipe`` given: that recipe (``qat-ranges`` needs weights from a QAT ``.tflite``);
- ``--calib DIR`` given: the calibrated default (``fidelity``);
- random weights: the default recipe on synthetic calibration data (latency work only);
- weights from a ``.tflite`` whose activations are quantized (Google's ``google-quant`` files, the default
  weights): ``qat-ranges``, no images needed;
- any other weights (float-trained ``.tflite``, Keras, checkpoints): one line asking for ``--calib DIR``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..core.bundle import sha256_file
from ..core.errors import UsageError
from ..quantize.recipes import DEFAULT_RECIPE, FILE_RANGE_RECIPES


@dataclass(frozen=True)
class Int8Choice:
    """The recipe, the source file's ranges (``qat-ranges`` only) and the one stderr line that says so."""

    recipe: str
    activation_ranges: object | None = None  # mobilenet_edge.quantize.qat_ranges.QatRanges
    message: str | None = None


def _qat_ranges(path: Path | None):
    if path is None or Path(path).suffix.lower() != ".tflite":
        return None
    from .weights.tflite_file import read_activation_ranges

    return read_activation_ranges(path)


def choose_int8_recipe(recipe: str | None, *, calib, weights_source: str, weights_path: Path | None) -> Int8Choice:
    """The int8 recipe for these weights (module docstring).

    Args:
        recipe: ``--recipe`` (None: choose).
        calib: ``--calib`` folder or None.
        weights_source: the manifest's ``weights.source`` (``random``, ``tflite``, ``keras``, ...).
        weights_path: the weights file read (None for random weights).
    Raises:
        UsageError: ``qat-ranges`` for weights without a QAT ``.tflite``, real weights without ranges
            and without ``--calib``, or a calibrated ``--recipe`` with real weights and no ``--calib``.
        WeightsError: the ``.tflite`` cannot be read.
    """
    if recipe is not None and recipe not in FILE_RANGE_RECIPES:
        if calib is None and weights_source != "random":
            raise UsageError(f"--recipe {recipe} calibrates: it needs --calib DIR (calibration images); without "
                             "images only --recipe qat-ranges works, with quantization-aware trained .tflite weights")
        return Int8Choice(recipe)
    if recipe is None and (calib is not None or weights_source == "random"):
        return Int8Choice(DEFAULT_RECIPE)
    qat = _qat_ranges(weights_path)
    if qat is not None:
        return Int8Choice("qat-ranges", qat, f"int8 recipe: qat-ranges (activation ranges from {qat.file})")
    what = Path(weights_path).name if weights_path is not None else weights_source
    if recipe is not None:
        raise UsageError(f"--recipe {recipe} needs weights from a quantization-aware trained .tflite "
                         f"(e.g. --weights google-quant); {what} has no activation ranges")
    raise UsageError(f"--int8 needs --calib DIR (calibration images) for these weights ({what}): only a "
                     "quantization-aware trained .tflite (the default google-quant weights) carries its own ranges")


def bundle_qat_source(weights: dict) -> Path:
    """The QAT ``.tflite`` a bundle was exported from (its manifest's ``weights`` record), checked by sha256.

    Looks at ``weights["path"]``, then the package's shipped copy and the download cache of
    ``weights["registry"]["name"]``.

    Raises:
        UsageError: the bundle's weights are not a ``.tflite``, or no file with the recorded sha256 is found.
    """
    name, sha = weights.get("file"), weights.get("sha256")
    if weights.get("source") != "tflite" or not name or not sha:
        raise UsageError(f"recipe qat-ranges needs a bundle exported from a QAT .tflite; this one has weights "
                         f"from {weights.get('source') or 'an unknown source'}")
    cands = [Path(weights["path"])] if weights.get("path") else []
    reg = weights.get("registry") or {}
    if reg.get("name"):
        from .weights import download as D
        from .weights.registry import lookup, parse_name

        source, a, r = parse_name(reg["name"])
        entry = lookup(source, a, r)
        cands += [p for p in (D.shipped_path(entry), D.cached(entry)) if p is not None]
    for p in cands:
        if p.is_file() and sha256_file(p) == sha:
            return p
    raise UsageError(f"the bundle's weights file {name} (sha256 {sha[:12]}...) is not on this machine "
                     f"(looked at: {', '.join(str(p) for p in cands) or 'nothing recorded'}); give --calib DIR instead")


__all__ = ["Int8Choice", "bundle_qat_source", "choose_int8_recipe"]
