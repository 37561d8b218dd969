"""Quantization recipes: what is done to ORT's static QDQ quantization to make int8 agree with fp32.

A recipe is a few recorded choices that turn into explicit ``quantize_static`` arguments
(:func:`plan`); no ORT internals are re-implemented. Measured in benchmarks/quant_fidelity.md
(issue #10, weights imported from Google's three reference ``.tflite`` files, 2-fold cross evaluation
on imagenet-calib):

- ``plain``: ORT as is (MinMax, per-channel int8 weights with ORT's ``max|w| / 127`` scales, every
  activation and the logits in uint8).
- ``grid``: per-channel int8 weight scales aligned to the weights' own grid
  (:func:`~.weight_grid.grid_weight_overrides`: Google's weights become exact) and the logits left in
  float (no QuantizeLinear after the classifier: ORT ``OpTypesToExcludeOutputQuantization``). Every
  Conv still runs in int8.
- ``fidelity`` (default): ``grid``, plus bias correction of the weight rounding error that remains
  (:func:`~.bias_correction.weight_bias_correct`; Nagel et al. 2019, arXiv:1906.04721, sec. 4.2), plus the first
  two Conv nodes (the stem and the first depthwise
  conv) kept in float, so the input image and the stem's output are never rounded to 8 bits: ORT's
  QDQ debugging tools (``qdq_loss_debug``) and a leave-one-out test showed those two tensors cost the
  most logits SQNR (each later tensor costs < 0.3 dB). On x86 the float stem is not slower: ORT's
  int8 stem (3 input channels) gains nothing over fp32.

- ``qat-ranges`` (the default for Google's quantization-aware-trained ``.tflite`` weights when no
  calibration images are given): no calibration at all. Every activation's scale and zero point is the
  one the source ``.tflite`` learned during training (:mod:`~.qat_ranges`: mapped layer by layer, given
  to ORT as ``TensorQuantOverrides``), weights on their grid as in ``grid``, logits in float. No bias
  correction (it needs images). Measured against ``fidelity`` in benchmarks/qat_ranges.md (issue #22).

Not kept (measured, see the benchmark table): Entropy and Percentile calibration, fewer calibration
images, int8 activations, uint8 per-tensor weights on Google's own grid (exact, but ORT's U8U8 kernels
are ~2x slower on x86), cross-layer equalization, empirical bias correction of activation errors.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

RECIPE_NAMES = ("plain", "grid", "fidelity", "qat-ranges")
#: recipes whose activation ranges come from the weights file instead of calibration images
FILE_RANGE_RECIPES = ("qat-ranges",)
DEFAULT_RECIPE = "fidelity"


@dataclass(frozen=True)
class Recipe:
    """One recipe; every field is recorded in manifest.json.

    Attributes:
        name: ``plain`` | ``grid`` | ``fidelity`` | ``qat-ranges``.
        weight_grid: align per-channel weight scales to the weights' grid when they lie on one.
        float_logits: do not quantize the output of the node producing the model's output (logits).
        float_first: number of Conv nodes, in graph order from the input, kept in float.
        weight_bias_correction: correct biases for the weight rounding error (needs calibration
            inputs: :func:`apply`).
        activation_ranges: ``calibration`` (ORT's calibrator on images) or ``qat-file`` (the scales and
            zero points stored in the source QAT ``.tflite``, :mod:`~.qat_ranges`; no images).
    """

    name: str
    weight_grid: bool
    float_logits: bool
    float_first: int
    weight_bias_correction: bool = False
    activation_ranges: str = "calibration"

    def to_dict(self) -> dict:
        return asdict(self)


RECIPES = {
    "plain": Recipe("plain", weight_grid=False, float_logits=False, float_first=0),
    "grid": Recipe("grid", weight_grid=True, float_logits=True, float_first=0),
    "fidelity": Recipe("fidelity", weight_grid=True, float_logits=True, float_first=2, weight_bias_correction=True),
    "qat-ranges": Recipe("qat-ranges", weight_grid=True, float_logits=True, float_first=2, activation_ranges="qat-file"),
}


def get_recipe(name: str) -> Recipe:
    """The recipe called ``name``.

    Raises:
        ValueError: unknown name (lists the known ones).
    """
    try:
        return RECIPES[name]
    except KeyError:
        raise ValueError(f"recipe must be one of {', '.join(RECIPE_NAMES)}, got {name!r}") from None


@dataclass(frozen=True)
class Plan:
    """ORT arguments derived from a recipe for one model.

    Attributes:
        tensor_quant_overrides: for ``extra_options["TensorQuantOverrides"]`` (weight name -> per-channel
            rmin/rmax list).
        exclude_output_op_types: for ``extra_options["OpTypesToExcludeOutputQuantization"]``.
        nodes_to_exclude: for ``quantize_static(nodes_to_exclude=...)``.
        record: JSON-ready summary for manifest.json (node names, grid statistics).
    """

    tensor_quant_overrides: dict
    exclude_output_op_types: tuple[str, ...]
    nodes_to_exclude: tuple[str, ...]
    record: dict

    def extra_options(self) -> dict:
        """The ORT ``extra_options`` entries of this plan (merge into the others)."""
        d: dict = {}
        if self.tensor_quant_overrides:
            d["TensorQuantOverrides"] = self.tensor_quant_overrides
        if self.exclude_output_op_types:
            d["OpTypesToExcludeOutputQuantization"] = list(self.exclude_output_op_types)
        return d


def plan(model, recipe: Recipe | str, *, reduce_range: bool = False) -> Plan:
    """Turn ``recipe`` into ORT arguments for ``model`` (the ``onnx.ModelProto`` that is quantized,
    i.e. after ``quant_pre_process``: node names must match). ``reduce_range``: the value passed to
    ``quantize_static`` (the weight grid must match ORT's 7-bit range then).

    Returns:
        :class:`Plan`. ``weight_grid`` on weights that lie on no grid (random or float-trained weights)
        changes nothing and says so in ``record["weight_grid"]``.
    """
    from .weight_grid import grid_weight_overrides

    r = get_recipe(recipe) if isinstance(recipe, str) else recipe
    overrides: dict = {}
    rec: dict = {"recipe": r.to_dict()}
    if r.weight_grid:
        overrides, stats = grid_weight_overrides(model, reduce_range=reduce_range)
        rec["weight_grid"] = stats
    ops: tuple[str, ...] = ()
    if r.float_logits:
        outs = {o.name for o in model.graph.output}
        producers = [n for n in model.graph.node if any(o in outs for o in n.output)]
        ops = tuple(sorted({n.op_type for n in producers}))
        # excluding an op type's output quantization applies to every node of that type: say which ones
        rec["float_output_of"] = [n.name for n in model.graph.node if n.op_type in ops]
    convs = [n.name for n in model.graph.node if n.op_type == "Conv"]
    excl = tuple(convs[: r.float_first])
    rec["float_nodes"] = list(excl)
    return Plan(tensor_quant_overrides=overrides, exclude_output_op_types=ops, nodes_to_exclude=excl, record=rec)


def apply(model, recipe: Recipe | str, calib, *, reduce_range: bool = False) -> tuple[object, Plan]:
    """The model to calibrate and quantize, and the ORT arguments, for ``recipe``.

    Args:
        model: ``onnx.ModelProto`` after ``quant_pre_process`` (not modified).
        calib: calibration inputs for the bias correction: (N, 3, H, W) float32 or an iterable of batches.
            Unused unless ``recipe.weight_bias_correction``.
    Returns:
        (model, :class:`Plan`): the model has corrected biases when the recipe asks for it (and the plan's
        record says by how much); otherwise it is ``model`` itself.
    """
    from .bias_correction import weight_bias_correct

    r = get_recipe(recipe) if isinstance(recipe, str) else recipe
    p = plan(model, r, reduce_range=reduce_range)
    if not (r.weight_bias_correction and p.tensor_quant_overrides):
        return model, p
    inits = {n.name: n.input[1] for n in model.graph.node if n.op_type in ("Conv", "Gemm") and len(n.input) > 1}
    floated = {inits[n] for n in p.nodes_to_exclude if n in inits}
    quantized = {k: v for k, v in p.tensor_quant_overrides.items() if k not in floated}
    corrected, rec = weight_bias_correct(model, quantized, calib, reduce_range=reduce_range)
    p.record["weight_bias_correction"] = rec
    return corrected, p


__all__ = ["DEFAULT_RECIPE", "FILE_RANGE_RECIPES", "Plan", "RECIPES", "RECIPE_NAMES", "Recipe", "apply", "get_recipe", "plan"]
