"""Typed options of ``quantize``: what ORT's ``quantize_static`` and calibrators are told, every value
explicit (ORT's defaults changed across releases). Recorded in manifest.json ("quantization.options")."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..core.errors import UsageError
from .recipes import RECIPE_NAMES

METHODS = ("minmax", "entropy", "percentile")
ACTIVATION_TYPES = ("uint8", "int8")

@dataclass(frozen=True)
class OrtExtraOptions:
    """Typed view of ``quantize_static(extra_options=...)`` (ORT 1.32 names, :mod:`~.stages` docstring).

    Attributes map one-to-one to ORT keys (see :meth:`to_ort`); ``None`` means "use the method's
    default" and is resolved when the ORT arguments are built (:meth:`calibrator_options`), so that every
    value handed to ORT is explicit.
    """

    activation_symmetric: bool = False  # ActivationSymmetric
    weight_symmetric: bool = True  # WeightSymmetric (ORT default for int8 weights)
    calib_tensor_range_symmetric: bool | None = None  # CalibTensorRangeSymmetric (percentile: ORT default True)
    calib_moving_average: bool = False  # CalibMovingAverage (MinMax only)
    calib_moving_average_constant: float = 0.01  # CalibMovingAverageConstant
    calib_percentile: float = 99.999  # CalibPercentile (Percentile only)
    calib_num_bins: int | None = None  # calibrator num_bins: ORT defaults entropy 128, percentile 2048
    calib_num_quantized_bins: int = 128  # calibrator num_quantized_bins (Entropy only)
    calib_max_intermediate_outputs: int | None = None  # CalibMaxIntermediateOutputs (MinMax only)
    keep_removable_activations: bool = False  # QDQKeepRemovableActivations
    dedicated_qdq_pair: bool = False  # DedicatedQDQPair
    tensor_quant_overrides: dict = field(default_factory=dict)  # TensorQuantOverrides

    def to_ort(self) -> dict:
        """The ``extra_options`` dict handed to ``quantize_static`` (ORT key names)."""
        d: dict[str, Any] = {
            "ActivationSymmetric": self.activation_symmetric,
            "WeightSymmetric": self.weight_symmetric,
            "CalibMovingAverage": self.calib_moving_average,
            "CalibMovingAverageConstant": self.calib_moving_average_constant,
            "CalibPercentile": self.calib_percentile,
            "QDQKeepRemovableActivations": self.keep_removable_activations,
            "DedicatedQDQPair": self.dedicated_qdq_pair,
        }
        if self.calib_tensor_range_symmetric is not None:
            d["CalibTensorRangeSymmetric"] = self.calib_tensor_range_symmetric
        if self.calib_max_intermediate_outputs is not None:
            d["CalibMaxIntermediateOutputs"] = self.calib_max_intermediate_outputs
        if self.tensor_quant_overrides:
            d["TensorQuantOverrides"] = self.tensor_quant_overrides
        return d

    def calibrator_options(self, method: str) -> dict:
        """Keyword dict for ORT's ``create_calibrator(extra_options=...)`` (its own key names)."""
        sym = self.calib_tensor_range_symmetric
        if method == "minmax":
            d = {
                "symmetric": bool(sym) if sym is not None else False,
                "moving_average": self.calib_moving_average,
                "averaging_constant": self.calib_moving_average_constant,
                "per_channel": False,
            }
            if self.calib_max_intermediate_outputs is not None:
                d["max_intermediate_outputs"] = self.calib_max_intermediate_outputs
            return d
        if method == "entropy":
            return {
                "symmetric": bool(sym) if sym is not None else False,
                # ORT's default. With 128 bins and 128 quantized bins the KL search has one candidate
                # (the full range), so Entropy ~ MinMax; 2048 bins measured worse (agreement 76-94% vs
                # 84-98% on imagenet-calib) and ~20x slower: see docs/quantize.md.
                "num_bins": self.calib_num_bins or 128,
                "num_quantized_bins": self.calib_num_quantized_bins,
            }
        return {  # percentile
            "symmetric": bool(sym) if sym is not None else True,
            "num_bins": self.calib_num_bins or 2048,
            "percentile": self.calib_percentile,
        }


@dataclass(frozen=True)
class QuantOptions:
    """What ``quantize`` does; every field is recorded in manifest.json ("quantization.options").

    Attributes:
        method: calibration method, ``minmax`` | ``entropy`` | ``percentile`` (ORT CalibrationMethod).
        per_channel: per-channel weight scales (default; per-tensor collapses MobileNet's depthwise
            layers, see the paper's companion Krishnamoorthi 2018, arXiv:1806.08342, Table 2).
        activations: activation type, ``uint8`` (U8S8, ORT's advice for x86) or ``int8`` (S8S8).
        weights: weight type; only ``int8`` (symmetric) is supported.
        reduce_range: 7-bit weights; ``None`` = decide from the CPU (see :func:`~.reduce_range.decide_reduce_range`).
        samples: maximum number of calibration images (the first ``samples`` of the calibration set).
        extra: ORT ``extra_options`` (typed).
        activation_range_guard: clamp calibrated ranges of Clip/Relu outputs to the activation's bounds.
        nodes_to_exclude: node names kept in float (issue #10: mixed precision).
        recipe: :mod:`~.recipes` name: ``fidelity`` (default: grid-aligned weight scales, weight-error
            bias correction, float logits, first two convs in float), ``grid``, ``plain`` (ORT as is), or
            ``qat-ranges`` (activation ranges from the source QAT ``.tflite``, no calibration: the caller
            passes them as ``activation_ranges``, see :mod:`~.qat_ranges`).
            docs/fidelity.md and benchmarks/quant_fidelity.md (issue #10) have the measurements.
        float_first: keep this many Conv nodes, in graph order from the input, in float instead of the
            recipe's number (``fidelity``: 2; ``grid``/``plain``: 0). Mixed precision: more is closer to
            fp32 and slower where int8 is fast (measured trade-off in docs/fidelity.md). None = the recipe's.
        seed: seed of synthetic calibration data.
        compact: drop shape-inference value_info, tool bookkeeping metadata and all-zero weight
            zero points from the int8 file (:func:`~.compact.compact`; numerics unchanged).
    """

    method: str = "minmax"
    per_channel: bool = True
    activations: str = "uint8"
    weights: str = "int8"
    reduce_range: bool | None = None
    samples: int | None = 256
    extra: OrtExtraOptions = field(default_factory=OrtExtraOptions)
    activation_range_guard: bool = True
    nodes_to_exclude: tuple[str, ...] = ()
    recipe: str = "fidelity"
    float_first: int | None = None
    seed: int = 0
    compact: bool = True

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise UsageError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.activations not in ACTIVATION_TYPES:
            raise UsageError(f"activations must be one of {', '.join(ACTIVATION_TYPES)}, got {self.activations!r}")
        if self.weights != "int8":
            raise UsageError(f"weights must be int8, got {self.weights!r}")
        if self.samples is not None and self.samples < 1:
            raise UsageError(f"samples must be >= 1, got {self.samples}")
        if not 50.0 < self.extra.calib_percentile <= 100.0:
            raise UsageError(f"percentile must be in (50, 100], got {self.extra.calib_percentile}")
        if self.extra.calib_num_bins is not None and self.extra.calib_num_bins < 16:
            raise UsageError(f"calibration bins must be >= 16, got {self.extra.calib_num_bins}")
        if self.recipe not in RECIPE_NAMES:
            raise UsageError(f"recipe must be one of {', '.join(RECIPE_NAMES)}, got {self.recipe!r}")
        if self.float_first is not None and self.float_first < 0:
            raise UsageError(f"float_first must be >= 0, got {self.float_first}")

    def to_manifest(self) -> dict:
        """JSON-ready dict of every option, plus the exact ORT arguments derived from them."""
        d = asdict(self)
        d["nodes_to_exclude"] = list(self.nodes_to_exclude)
        d["ort_extra_options"] = self.extra.to_ort()
        d["ort_calibrator_options"] = self.extra.calibrator_options(self.method)
        return d

