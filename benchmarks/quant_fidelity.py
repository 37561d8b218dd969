"""int8 vs fp32 fidelity of every quantization method tried for issue #10, and the latency of the kept ones.

For each bundle (exported with weights imported from Google's reference .tflite files) and each
method: 2-fold cross evaluation over a labelled image folder (sorted files; even positions calibrate
and odd positions evaluate, then swapped; the two evaluation halves pooled), then

- top-1 agreement int8 vs fp32 (fraction of images whose argmax is the same),
- logits SQNR in dB, ``10 log10(sum(fp32^2) / sum((fp32 - int8)^2))`` per image, mean over images,
- top-1 accuracy of the int8 model (and of fp32), with a 1001-class model: argmax - 1 == imagenet_index.

Latency: ORT CPU, 1 intra-op thread, batch 1, the fold-0 model of each kept method and the fp32 model
in one process, interleaved round by round (``--rounds`` x ``--runs`` runs each); reported as the
median over rounds of the per-round median (wall time, ``perf_counter_ns``) and of the thread CPU
time (``thread_time_ns``: less sensitive to other processes on a shared machine), with ratios to
plain int8.

Run (about 10 minutes on 2 shared cores):

    PYTHONPATH=$PWD python benchmarks/quant_fidelity.py export/mobilenet_v1_0.25_128 \\
        export/mobilenet_v1_0.50_160 export/mobilenet_v1_0.75_192 \\
        --calib ../shared/data/imagenet-calib --out benchmarks/quant_fidelity

writes ``quant_fidelity.json`` (numbers, machine, versions) and ``quant_fidelity.md`` (tables).
"""

from __future__ import annotations

import argparse
import copy
import csv
import os
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

sys.path.insert(0, str(ROOT / "benchmarks"))

from quant_fidelity_report import google_tflite, markdown  # noqa: E402
from research import equalize as eq  # noqa: E402

from mobilenet_edge.core import jsonio  # noqa: E402
from mobilenet_edge.core.bundle import check_can_write  # noqa: E402
from mobilenet_edge.core.errors import UsageError  # noqa: E402
from mobilenet_edge.core.images import Preprocessing, load  # noqa: E402
from mobilenet_edge.core.labels import background_offset  # noqa: E402
from mobilenet_edge.core.manifest import Manifest  # noqa: E402
from mobilenet_edge.core.onnx_graph import quiet_ort_logging  # noqa: E402
from mobilenet_edge.core.sessions import ort_session  # noqa: E402
from mobilenet_edge.quantize import recipes, stages  # noqa: E402
from mobilenet_edge.quantize.calibration import Warnings, make_array_reader  # noqa: E402
from mobilenet_edge.quantize.fidelity import sqnr_db  # noqa: E402
from mobilenet_edge.quantize.options import OrtExtraOptions, QuantOptions  # noqa: E402
from mobilenet_edge.quantize.pipeline import collect_images  # noqa: E402
from mobilenet_edge.quantize.stages import quantize_model  # noqa: E402
from mobilenet_edge.quantize.weight_grid import weight_grid, weight_nodes  # noqa: E402

# name -> spec. Keys: method, calib (calibrator options), samples, activations, act_symmetric, per_channel,
# recipe (weight_grid / float_logits / float_first as in mobilenet_edge.quantize.recipes), u8_grid, cle, bias_correction.
METHODS: dict[str, dict] = {
    "plain (MinMax, per-channel, U8S8)": {"recipe": "plain"},
    "per-tensor weights": {"recipe": "plain", "per_channel": False},
    "int8 activations (asymmetric)": {"recipe": "plain", "activations": "int8"},
    "int8 activations (symmetric)": {"recipe": "plain", "activations": "int8", "act_symmetric": True},
    "Entropy, 128 bins (ORT default)": {"recipe": "plain", "method": "entropy", "calib": {"num_bins": 128, "num_quantized_bins": 128}},
    "Entropy, 2048 bins": {"recipe": "plain", "method": "entropy", "calib": {"num_bins": 2048, "num_quantized_bins": 128}},
    "Percentile 99.99": {"recipe": "plain", "method": "percentile", "calib": {"num_bins": 2048, "percentile": 99.99, "symmetric": False}},
    "Percentile 99.999": {"recipe": "plain", "method": "percentile", "calib": {"num_bins": 2048, "percentile": 99.999, "symmetric": False}},
    "MinMax, 10 calibration images": {"recipe": "plain", "samples": 10},
    "MinMax, 25 calibration images": {"recipe": "plain", "samples": 25},
    "logits in float": {"weight_grid": False, "float_logits": True, "float_first": 0},
    "uint8 per-tensor weights on Google's grid": {"recipe": "plain", "per_channel": False, "u8_grid": True},
    "weight grid (per-channel, aligned)": {"weight_grid": True, "float_logits": False, "float_first": 0},
    "recipe grid (aligned + float logits)": {"recipe": "grid"},
    "grid + Percentile 99.999": {"recipe": "grid", "method": "percentile", "calib": {"num_bins": 2048, "percentile": 99.999, "symmetric": False}},
    "grid + CLE (weight ranges)": {"recipe": "grid", "cle": "weights"},
    "grid + CLE (activation ranges)": {"recipe": "grid", "cle": "activations"},
    "grid + bias correction (activation errors, empirical)": {"recipe": "grid", "bias_correction": True},
    "grid + bias correction (weight errors)": {"weight_grid": True, "float_logits": True, "float_first": 0,
                                               "weight_bias_correction": True},
    "grid + 1st conv float": {"weight_grid": True, "float_logits": True, "float_first": 1},
    "grid + 2 first convs float": {"weight_grid": True, "float_logits": True, "float_first": 2},
    "recipe fidelity (grid + weight bias corr. + 2 first convs float)": {"recipe": "fidelity"},
    "grid + 4 first convs float": {"weight_grid": True, "float_logits": True, "float_first": 4},
    "grid + 8 first convs float": {"weight_grid": True, "float_logits": True, "float_first": 8},
    "recipe fidelity through `mobilenet_edge.quantize` (the product)": {"recipe": "fidelity", "via_quantize": True},
    "uint8 Google grid + float logits + 2 first convs float": {"weight_grid": False, "float_logits": True,
                                                                "float_first": 2, "per_channel": False, "u8_grid": True},
}
LATENCY = {
    "plain": "plain (MinMax, per-channel, U8S8)",
    "grid": "recipe grid (aligned + float logits)",
    "fidelity": "recipe fidelity (grid + weight bias corr. + 2 first convs float)",
    "grid+4 float": "grid + 4 first convs float",
    "grid+8 float": "grid + 8 first convs float",
    "uint8 weights": "uint8 per-tensor weights on Google's grid",
}


# ----------------------------------------------------------------------------------------------
# quantization: the package's own stages (mobilenet_edge.quantize.stages: pre_process, calibrate,
# guard_ranges, static_arguments, run_quantize_static), plus the research variants on top of them
# ----------------------------------------------------------------------------------------------


def run(path, x, batch: int = 25) -> np.ndarray:
    s = ort_session(path, threads=1)
    return np.concatenate([s.run(None, {"input": x[i : i + batch]})[0] for i in range(0, len(x), batch)])


def options_of(spec: dict) -> QuantOptions:
    """The method's :class:`QuantOptions` (calibrator settings as in ``spec["calib"]``)."""
    c = spec.get("calib", {})
    extra = OrtExtraOptions(activation_symmetric=bool(spec.get("act_symmetric", False)),
                            calib_tensor_range_symmetric=c.get("symmetric"), calib_num_bins=c.get("num_bins"),
                            calib_num_quantized_bins=c.get("num_quantized_bins", 128),
                            calib_percentile=c.get("percentile", 99.999))
    return QuantOptions(method=spec.get("method", "minmax"), per_channel=spec.get("per_channel", True),
                        activations=spec.get("activations", "uint8"), reduce_range=False, samples=None, extra=extra,
                        recipe=spec.get("recipe", "plain"))


def _guard_min(model, ranges) -> None:
    """After cross-layer equalization (research), a Relu feeding a per-channel Min gets the Min output's
    upper range (the package's guard knows Clip and Relu only)."""
    for n in model.graph.node:
        if n.op_type == "Min" and n.input[0] in ranges.data and n.output[0] in ranges.data:
            a, b = ranges.data[n.input[0]], ranges.data[n.output[0]]
            a.highest = np.minimum(a.range_value[1], b.range_value[1]).astype(a.range_value[1].dtype)


def u8_grid_overrides(model) -> dict:
    """Per-tensor uint8 weights reproducing Google's narrow-range grid: q in [1, 255], scale s, zero point."""
    from onnx import numpy_helper

    quant_type = stages.ort_tools().QuantType.QUInt8
    inits = {i.name: i for i in model.graph.initializer}
    ov = {}
    for _n, name, _axis in weight_nodes(model):
        w = numpy_helper.to_array(inits[name])
        s = weight_grid(w)
        if s is None:
            continue
        k = np.round(w / s)
        zp = int(1 - k.min()) if k.max() - k.min() == 254 else int(-k.min())
        ov[name] = [{"quant_type": quant_type, "scale": np.float32(s), "zero_point": np.uint8(zp)}]
    return ov


def quantize(pre: Path, ranges, dst: Path, spec: dict, rplan, work: Path) -> Path:
    """Range guard + ``quantize_static`` with the package's arguments (u8 grid: uint8 weights overridden)."""
    import onnx

    model = onnx.load(str(pre))
    r = copy.deepcopy(ranges)
    stages.guard_ranges(model, r)
    _guard_min(model, r)
    options = options_of(spec)
    kwargs = stages.static_arguments(options, rplan, reduce_range=False)
    if spec.get("u8_grid"):
        kwargs["extra_options"] = {**kwargs["extra_options"], "TensorQuantOverrides": u8_grid_overrides(model),
                                   "WeightSymmetric": False}
        kwargs["weight_type"] = stages.ort_tools().QuantType.QUInt8
    return stages.run_quantize_static(pre, dst, r, kwargs, work)


def recipe_of(spec: dict) -> recipes.Recipe:
    if "recipe" in spec:
        return recipes.get_recipe(spec["recipe"])
    return recipes.Recipe("custom", spec["weight_grid"], spec["float_logits"], spec["float_first"],
                          spec.get("weight_bias_correction", False))


def quantize_method(src: Path, x_cal: np.ndarray, dst: Path, spec: dict, work: Path) -> dict:
    """fp32 ONNX -> int8 ONNX for one method; returns a small record."""
    import onnx

    rec: dict = {}
    if spec.get("via_quantize"):  # the product's own path: mobilenet_edge.quantize.stages.quantize_model
        q = quantize_model(src, dst, x_cal, QuantOptions(recipe=spec["recipe"], samples=None), reduce_range=False)
        return {"plan": q["recipe"]}
    fp32 = onnx.load(str(src))
    if spec.get("cle"):
        act_max = eq.activation_channel_max(fp32, x_cal) if spec["cle"] == "activations" else None
        fp32, rec["cle"] = eq.cross_layer_equalize(fp32, act_max=act_max)
        src = work / "equalized.onnx"
        onnx.save(fp32, str(src))
    with quiet_ort_logging():
        pre = stages.pre_process(src, work / "pre.onnx")
    x_used = x_cal[: spec["samples"]] if spec.get("samples") else x_cal
    pre_model = onnx.load(str(pre))
    model, rplan = recipes.apply(pre_model, recipe_of(spec), x_used)
    if model is not pre_model:
        pre = work / "pre_corrected.onnx"
        onnx.save(model, str(pre))
        pre_model = model
    ranges, _ = stages.calibrate(pre, make_array_reader(x_used), options_of(spec), len(x_used), work)
    rec["plan"] = rplan.record
    quantize(pre, ranges, dst, spec, rplan, work)
    if spec.get("bias_correction"):
        corrected, rec["bias_correction"] = eq.bias_correct(pre_model, onnx.load(str(dst)), x_used, local=True)
        onnx.save(corrected, str(work / "corrected.onnx"))
        quantize(work / "corrected.onnx", ranges, dst, spec, rplan, work)
    return rec


# ----------------------------------------------------------------------------------------------
# evaluation
# ----------------------------------------------------------------------------------------------


def images_and_labels(folder: Path, prep: Preprocessing) -> tuple[list[str], np.ndarray, np.ndarray]:
    with open(folder / "labels.csv", newline="", encoding="utf-8") as fh:
        rows = sorted(csv.DictReader(fh), key=lambda r: r["file"])
    x = np.stack([load(folder / r["file"], prep) for r in rows])
    return [r["file"] for r in rows], x, np.array([int(r["imagenet_index"]) for r in rows])


def folds(folder: Path, files: list[str]):
    """The package's 2-fold split of ``folder`` (:func:`collect_images` with ``fold`` 0 and 1: sorted files,
    even positions calibrate and odd positions evaluate, then swapped), as indices into ``files``."""
    index = {(folder / f).resolve(): i for i, f in enumerate(files)}
    out = []
    for k in (0, 1):
        cal, ev, *_ = collect_images(folder, None, Warnings(), fold=k)
        out.append((np.array([index[p.resolve()] for p in cal]), np.array([index[p.resolve()] for p in ev])))
    return out


def evaluate_bundle(bundle: Path, calib: Path, methods: dict, work: Path, keep: set[str]) -> dict:
    prep = Manifest.read(bundle).prep()
    src = bundle / "model.onnx"
    files, x, y = images_and_labels(calib, prep)
    f = run(src, x)
    offset = background_offset(f.shape[1])
    out = {"bundle": bundle.name, "images": len(files), "fp32_top1": float(np.mean(f.argmax(1) - offset == y)),
           "methods": {}, "kept_models": {}}
    for name, spec in methods.items():
        t0 = time.perf_counter()
        q = np.zeros_like(f)
        recs = []
        for k, (cal, ev) in enumerate(folds(calib, files)):
            wd = work / f"{bundle.name}-{abs(hash(name)) % 10**8}-{k}"
            wd.mkdir(parents=True, exist_ok=True)
            dst = wd / "model.int8.onnx"
            recs.append(quantize_method(src, x[cal], dst, spec, wd))
            q[ev] = run(dst, x[ev])
            if k == 0 and name in keep:
                out["kept_models"][name] = str(dst)
        s = np.array([sqnr_db(fi, qi) for fi, qi in zip(f, q)])
        out["methods"][name] = {
            "agreement_top1": float(np.mean(f.argmax(1) == q.argmax(1))),
            "sqnr_db_mean": float(np.mean(s)), "sqnr_db_worst": float(np.min(s)),
            "int8_top1": float(np.mean(q.argmax(1) - offset == y)),
            "disagreements": [files[i] for i in np.where(f.argmax(1) != q.argmax(1))[0]],
            "spec": {k: v for k, v in spec.items()}, "record_fold0": jsonio.finite_or_none(recs[0]),
            "seconds": round(time.perf_counter() - t0, 1),
        }
        m = out["methods"][name]
        print(f"{bundle.name:24s} {name:46s} agree {100 * m['agreement_top1']:5.1f}%  SQNR {m['sqnr_db_mean']:5.2f} dB  "
              f"top-1 {100 * m['int8_top1']:4.1f}% (fp32 {100 * out['fp32_top1']:4.1f}%)  {m['seconds']:.0f}s",
              file=sys.stderr, flush=True)
    return out


# ----------------------------------------------------------------------------------------------
# latency
# ----------------------------------------------------------------------------------------------


def latency(paths: dict[str, str], res: int, *, rounds: int, runs: int) -> dict:
    """Interleaved 1-thread latency (ms) of several models in this process; see the module docstring."""
    x = np.random.default_rng(0).standard_normal((1, 3, res, res)).astype(np.float32)
    ss = {k: ort_session(p, threads=1) for k, p in paths.items()}
    for s in ss.values():
        for _ in range(10):
            s.run(None, {"input": x})
    wall = {k: [] for k in ss}
    cpu = {k: [] for k in ss}
    for _ in range(rounds):
        for k, s in ss.items():
            tw, tc = [], []
            for _ in range(runs):
                w0, c0 = time.perf_counter_ns(), time.thread_time_ns()
                s.run(None, {"input": x})
                tc.append(time.thread_time_ns() - c0)
                tw.append(time.perf_counter_ns() - w0)
            wall[k].append(np.median(tw) / 1e6)
            cpu[k].append(np.median(tc) / 1e6)
    return {k: {"wall_p50_ms": float(np.median(wall[k])), "cpu_p50_ms": float(np.median(cpu[k])),
                "wall_rounds_ms": [float(v) for v in wall[k]]} for k in ss}


def machine() -> dict:
    import onnx
    import onnxruntime

    model = ""
    flags: list[str] = []
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and not model:
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                fl = set(line.split(":", 1)[1].split())
                flags = sorted(fl & {"avx2", "avx512bw", "avx512_vnni", "avx_vnni", "asimddp", "i8mm"})
    except OSError:
        pass
    return {"cpu": model, "isa_flags": flags, "machine": platform.machine(), "cores": os.cpu_count(),
            "python": platform.python_version(), "onnxruntime": onnxruntime.__version__, "onnx": onnx.__version__,
            "numpy": np.__version__, "load_avg": list(os.getloadavg()),
            "note": "2 cores shared with other jobs: wall times are noisy, CPU times and ratios within one run are the figures to read"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bundles", nargs="+", type=Path)
    ap.add_argument("--calib", type=Path, required=True, help="labelled folder (labels.csv: file,imagenet_index)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "quant_fidelity")
    ap.add_argument("--methods", default="", help="';'-separated subset of method names (default: all)")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--no-latency", action="store_true")
    ap.add_argument("--force", action="store_true", help="replace existing result files (committed ones included)")
    a = ap.parse_args(argv)
    try:  # never replace results without --force (issue #20)
        for f in (Path(f"{a.out}.json"), Path(f"{a.out}.md")):
            check_can_write(f, "--out", force=a.force)
    except UsageError as e:
        ap.error(str(e))
    methods = {k: v for k, v in METHODS.items() if not a.methods or k in a.methods.split(";")}
    res = {"created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), "calib": str(a.calib),
           "machine": machine(), "bundles": [], "latency": {}, "google_tflite": {}}
    with tempfile.TemporaryDirectory(prefix="quant-fidelity-") as td:
        for b in a.bundles:
            r = evaluate_bundle(b, a.calib, methods, Path(td), set(LATENCY.values()))
            res["bundles"].append(r)
            g = google_tflite(b, a.calib)
            if g:
                res["google_tflite"][b.name] = g
            if not a.no_latency and all(v in r["kept_models"] for v in LATENCY.values()):
                paths = {"fp32": str(b / "model.onnx"), **{k: r["kept_models"][v] for k, v in LATENCY.items()}}
                res["latency"][b.name] = latency(paths, Manifest.read(b).prep().res,
                                                 rounds=a.rounds, runs=a.runs)
                print(b.name, {k: round(v["cpu_p50_ms"], 3) for k, v in res["latency"][b.name].items()},
                      file=sys.stderr, flush=True)
            r.pop("kept_models")
    res["machine"]["load_avg_end"] = list(os.getloadavg())
    a.out.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{a.out}.json").write_text(jsonio.dumps(res, indent=1) + "\n")
    Path(f"{a.out}.md").write_text(markdown(res))
    print(markdown(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
