"""Fidelity of an int8 model against its fp32 source: top-1 agreement, logits SQNR, top-1/top-5,
per-layer SQNR (ORT's QDQ debugging tools) and the ReLU6 range check; rich tables (no torch)."""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
from rich.progress import Progress
from rich.table import Table

from ..core.errors import UsageError
from ..core.images import Preprocessing, iter_batches, skipped_message
from ..core.labels import background_offset
from ..core.onnx_graph import activation_bounds, quiet_ort_logging, stdout_to_stderr
from ..core.openvino_session import OPENVINO, ov_compiled_model
from ..core.sessions import ort_session
from ..core.tables import add_columns, compact_table

#: fp32 top-1 minus top-2 logit below which an image counts as a near-tie: the two classes' softmax
#: probabilities are within a factor exp(0.1) = 1.105 of each other.
NEAR_TIE_LOGIT = 0.1


def top2_margin(logits: np.ndarray) -> float:
    """fp32 top-1 minus top-2 value of one image's logits (any shape, e.g. (C,) or (C, 1, 1));
    ``inf`` with fewer than two values or a NaN among them (never a near-tie)."""
    v = np.asarray(logits, np.float64).ravel()
    if v.size < 2 or np.isnan(v).any():
        return math.inf
    top2 = np.partition(v, -2)[-2:]
    return float(top2[1] - top2[0])


def sqnr_db(ref: np.ndarray, test: np.ndarray) -> float:
    """``10 log10(sum(ref^2) / sum((ref - test)^2))`` in dB; ``inf`` when identical."""
    ref = np.asarray(ref, np.float64)
    noise = float(np.sum((ref - np.asarray(test, np.float64)) ** 2))
    sig = float(np.sum(ref**2))
    if noise == 0.0:
        return math.inf
    if sig == 0.0:
        return -math.inf
    return 10.0 * math.log10(sig / noise)


def _batches(items, prep, batch: int, warn, progress, desc) -> Iterator[tuple[list, np.ndarray]]:
    """(keys, (B, ...) float32) from arrays (keys = positions) or image files (keys = paths, through
    images.iter_batches; undecodable files are skipped with a warning)."""
    task = progress.add_task(desc, total=len(items)) if progress else None
    if isinstance(items, np.ndarray):
        for i in range(0, len(items), batch):
            x = items[i : i + batch]
            if progress:
                progress.advance(task, len(x))
            yield list(range(i, i + len(x))), x
        return
    skipped: list[Path] = []

    def on_error(p, e):
        skipped.append(p)
        if warn is not None:
            warn(skipped_message(p, e))

    for ps, x in iter_batches(items, prep, batch=batch, on_error=on_error):
        if progress:
            progress.advance(task, len(ps) + len(skipped))
        skipped.clear()
        yield ps, x


def fidelity(
    fp32_onnx: str | Path,
    int8_onnx: str | Path,
    images: Sequence[Path] | np.ndarray,
    prep: Preprocessing,
    *,
    labels: dict | None = None,
    batch: int = 8,
    warn: Callable[[str], None] | None = None,
    progress: Progress | None = None,
    runtime: str = "onnxruntime",
) -> dict:
    """int8 vs fp32 on evaluation images.

    Args:
        images: image files, or (N, 3, H, W) float32 inputs.
        labels: image -> ImageNet index 0..999 (with a 1001-class model, predicted index - 1 is
            compared: TF-slim's index 0 is "background", data README).
        runtime: "onnxruntime" (default) or "openvino" (both models compiled by
            :func:`~mobilenet_edge.core.openvino_session.ov_compiled_model`, f32 precision hint); the
            report then carries ``"runtime": "openvino"``.
    Returns:
        ``{"images", "agreement_top1" (fraction), "disagreements": [names], "sqnr_db": {"mean", "worst",
        "worst_image"}, "near_ties": {...}, "labelled", "fp32": {"top1", "top5"}, "int8": {...}}``;
        accuracies are fractions over the labelled images (None without labels); SQNR is per image on the
        logits, in dB. ``near_ties`` puts the agreement in context: ``{"margin_logit": NEAR_TIE_LOGIT,
        "images": evaluation images whose fp32 top-1 and top-2 logits differ by less than that,
        "disagreements": how many of the disagreeing images are such near-ties, "disagreement_margins":
        [{"image", "margin": fp32 top-1 - top-2 logit}]}``. Quantization noise flips near-ties first
        (benchmarks/agreement_vs_sqnr.md).
    Raises:
        UsageError: no evaluation image could be decoded.
    """
    fs, qs = _scorer(fp32_onnx, runtime), _scorer(int8_onnx, runtime)
    n = 0
    agree = 0
    sq: list[tuple[float, str]] = []
    dis: list[str] = []
    dis_margins: list[float] = []  # parallel to dis (names can repeat across sub-folders)
    ties = 0
    hits = {"fp32": [0, 0], "int8": [0, 0]}
    labelled = 0
    offset = None
    for keys, x in _batches(images, prep, batch, warn, progress, "evaluating"):
        f, q = fs(x), qs(x)
        if offset is None:
            offset = background_offset(f.shape[1])
        for k, fi, qi in zip(keys, f, q):
            n += 1
            key = k.name if isinstance(k, Path) else f"#{k}"
            same = int(np.argmax(fi)) == int(np.argmax(qi))
            agree += same
            margin = top2_margin(fi)
            ties += margin < NEAR_TIE_LOGIT
            if not same:
                dis.append(key)
                dis_margins.append(margin)
            sq.append((sqnr_db(fi, qi), key))
            if labels and k in labels:
                labelled += 1
                target = labels[k] + offset
                for tag, lg in (("fp32", fi), ("int8", qi)):
                    top5 = np.argsort(-lg)[:5]
                    hits[tag][0] += int(top5[0] == target)
                    hits[tag][1] += int(target in top5)
    rep = _report(n, agree, sq, dis, dis_margins, ties, hits, labelled)
    return rep if runtime == "onnxruntime" else {**rep, "runtime": runtime}


def _scorer(path: str | Path, runtime: str) -> Callable[[np.ndarray], np.ndarray]:
    """x (N, 3, H, W) float32 -> the model's first output, on ONNX Runtime or OpenVINO.

    Raises:
        UsageError: another runtime name.
    """
    if runtime == OPENVINO:
        req = ov_compiled_model(path).create_infer_request()

        def run(x):
            req.infer({0: np.ascontiguousarray(x)})
            return np.array(req.get_output_tensor(0).data)

        return run
    if runtime != "onnxruntime":
        raise UsageError(f"the fidelity report runs on onnxruntime or openvino, got {runtime!r}")
    sess = ort_session(path)
    name = sess.get_inputs()[0].name
    return lambda x: sess.run(None, {name: x})[0]


def _report(n: int, agree: int, sq: list, dis: list, dis_margins: list, ties: int, hits: dict, labelled: int) -> dict:
    """:func:`fidelity`'s record from its counts (see there). Raises UsageError when ``n`` is 0."""
    if n == 0:
        raise UsageError("no decodable evaluation image")
    vals = [v for v, _ in sq]
    finite = [v for v in vals if math.isfinite(v)]
    worst_v, worst_k = min(sq, key=lambda t: t[0])

    def acc(tag):
        return None if not labelled else {"top1": hits[tag][0] / labelled, "top5": hits[tag][1] / labelled}

    return {
        "images": n,
        "agreement_top1": agree / n,
        "disagreements": dis,
        "sqnr_db": {"mean": float(np.mean(finite)) if finite else None,
                    "worst": worst_v if math.isfinite(worst_v) else None, "worst_image": worst_k},
        "near_ties": {"margin_logit": NEAR_TIE_LOGIT, "images": ties,
                      "disagreements": sum(m < NEAR_TIE_LOGIT for m in dis_margins),
                      "disagreement_margins": [{"image": k, "margin": m} for k, m in zip(dis, dis_margins)]},
        "labelled": labelled,
        "fp32": acc("fp32"),
        "int8": acc("int8"),
    }


def debug_layers(fp32_onnx: str | Path, int8_onnx: str | Path, inputs: np.ndarray, *, input_name: str = "input") -> dict:
    """Per-layer SQNR (dB) from ORT's QDQ debugging tools (``qdq_loss_debug``), worst first.

    ``activations``: for each quantized activation, ``xmodel_db`` = SQNR of the int8 model's tensor
    against the fp32 model's (errors accumulated up to that layer) and ``qdq_db`` = SQNR of the
    tensor before vs after its own QuantizeLinear/DequantizeLinear pair (where ORT removed a ReLU6,
    "before" is the unclipped Conv output, so ``qdq_db`` then mostly measures the clipping). ``weights``: SQNR of each
    dequantized weight. Inputs: (N, 3, H, W) float32 (a few images; all activations are held in memory).
    """
    from onnxruntime.quantization.qdq_loss_debug import (
        collect_activations,
        compute_activation_error,
        compute_weight_error,
        create_activation_matching,
        create_weight_matching,
        modify_model_output_intermediate_tensors,
    )

    with tempfile.TemporaryDirectory(prefix="mobilenet-edge-qdqdebug-") as td, quiet_ort_logging(), stdout_to_stderr():
        fa, qa = Path(td) / "f.onnx", Path(td) / "q.onnx"
        modify_model_output_intermediate_tensors(str(fp32_onnx), str(fa))
        modify_model_output_intermediate_tensors(str(int8_onnx), str(qa))
        from .calibration import make_array_reader

        f_act = collect_activations(str(fa), make_array_reader(inputs, input_name=input_name))
        q_act = collect_activations(str(qa), make_array_reader(inputs, input_name=input_name))
        match = create_activation_matching(q_act, f_act)
        act_err = compute_activation_error(match)
        w_err = compute_weight_error(create_weight_matching(str(fp32_onnx), str(int8_onnx)))
    acts = [{"tensor": k, "xmodel_db": v.get("xmodel_err"), "qdq_db": v.get("qdq_err")} for k, v in act_err.items()]
    acts.sort(key=lambda r: (r["xmodel_db"] if r["xmodel_db"] is not None else math.inf))
    weights = sorted(({"weight": k, "db": float(v)} for k, v in w_err.items()), key=lambda r: r["db"])
    return {"images": int(len(inputs)), "activations": acts, "weights": weights}


def relu6_ranges(int8_onnx: str | Path, inputs: np.ndarray, *, bounds: dict | None = None, fp32_onnx=None) -> list[dict]:
    """Observed range of the int8 model's activation after each Clip(lo, hi) of the fp32 model.

    For each bounded activation tensor T of ``fp32_onnx`` (Clip with constant bounds, e.g. ReLU6 =
    Clip(0, 6)), finds the DequantizeLinear in the int8 model that carries T (``T`` quantized by a
    QuantizeLinear), adds its output as a graph output, runs ``inputs`` and reports
    ``{"tensor", "lo", "hi", "min", "max", "step" (scale)}``.
    """
    import onnx
    from onnx import numpy_helper

    if bounds is None:
        bounds = activation_bounds(onnx.load(str(fp32_onnx or int8_onnx)))
    q = onnx.load(str(int8_onnx))
    inits = {i.name: i for i in q.graph.initializer}
    q_by_input = {n.input[0]: n for n in q.graph.node if n.op_type == "QuantizeLinear"}
    dq_by_input = {n.input[0]: n for n in q.graph.node if n.op_type == "DequantizeLinear"}
    rows = []
    for t, (lo, hi) in bounds.items():
        qn = q_by_input.get(t)
        if qn is None or qn.output[0] not in dq_by_input:
            continue
        dq = dq_by_input[qn.output[0]]
        scale = float(numpy_helper.to_array(inits[qn.input[1]]).max()) if qn.input[1] in inits else float("nan")
        rows.append({"tensor": t, "lo": lo, "hi": hi, "out": dq.output[0], "step": scale})
    existing = {o.name for o in q.graph.output}
    for r in rows:
        if r["out"] not in existing:
            q.graph.output.append(onnx.helper.make_empty_tensor_value_info(r["out"]))
    with tempfile.TemporaryDirectory(prefix="mobilenet-edge-relu6-") as td:
        p = Path(td) / "q.onnx"
        onnx.save(q, str(p))
        s = ort_session(p)
        names = [r["out"] for r in rows]
        outs = s.run(names, {s.get_inputs()[0].name: np.asarray(inputs, np.float32)})
    for r, o in zip(rows, outs):
        r["min"], r["max"] = float(np.min(o)), float(np.max(o))
        del r["out"]
    return rows


# ----------------------------------------------------------------------------------------------
# bundle level
# ----------------------------------------------------------------------------------------------


def _fmt_pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def fidelity_table(rep: dict, title: str) -> Table:
    """Rich table of a fidelity record (:func:`fidelity`)."""
    s = rep["sqnr_db"]
    t = compact_table(title, caption=f"worst SQNR on {s['worst_image']}" if s.get("worst_image") else None)
    add_columns(t, ("metric", "fp32", "int8"), left=("metric",), fold=("metric",))
    t.add_row("images evaluated", str(rep["images"]), str(rep["images"]))
    t.add_row("top-1 agreement int8 vs fp32", "", _fmt_pct(rep["agreement_top1"]))
    t.add_row("logits SQNR mean (dB)", "", "-" if s["mean"] is None else f"{s['mean']:.1f}")
    t.add_row("logits SQNR worst (dB)", "", "-" if s["worst"] is None else f"{s['worst']:.1f}")
    nt = rep.get("near_ties")
    if nt:
        t.add_row(f"fp32 near-ties (top-2 gap < {nt['margin_logit']:g} logit)", str(nt["images"]),
                  f"{nt['disagreements']} of {len(rep['disagreements'])} disagreements" if rep["disagreements"]
                  else "no disagreement")
    if rep["labelled"]:
        t.add_row(f"top-1 ({rep['labelled']} labelled)", _fmt_pct(rep["fp32"]["top1"]), _fmt_pct(rep["int8"]["top1"]))
        t.add_row(f"top-5 ({rep['labelled']} labelled)", _fmt_pct(rep["fp32"]["top5"]), _fmt_pct(rep["int8"]["top5"]))
    return t


def layers_table(dbg: dict, *, top: int = 10) -> Table:
    t = compact_table(f"per-layer SQNR, worst {top} first ({dbg['images']} images)")
    add_columns(t, ("activation (int8 model vs fp32 model)", "SQNR (dB)"),
                left=("activation (int8 model vs fp32 model)",), fold=("activation (int8 model vs fp32 model)",))
    for r in dbg["activations"][:top]:
        t.add_row(r["tensor"], _f1(r["xmodel_db"]))
    w = dbg["weights"][:3]
    if w:
        t.caption = "weakest weights: " + ", ".join(f"{r['weight']} {r['db']:.1f} dB" for r in w)
    return t


def _f1(v) -> str:
    return "-" if v is None else f"{v:.1f}"
