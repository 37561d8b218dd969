"""int8 .tflite by recipe: fidelity to PyTorch fp32, top-1, size and LiteRT latency (x86, 1 thread).

For each reference variant (weights imported from Google's TF-slim .tflite files), `export_tflite` writes
the int8 file by each recipe (mobilenet_edge.quantize.recipes; docs/fidelity.md): `plain` (PyTorch's max|w|/127
weight scales), `grid` (grid-aligned scales: Google's weights stay exact), `fidelity --float-first 0`
(grid + bias correction of the weight rounding left: the best full-integer file) and `fidelity` (the
default: that + the first two convs in float). 2-fold cross evaluation over ../shared/data/imagenet-calib
(calibrate on the even-indexed 50 images, evaluate on the odd 50, swap, pool the 100 predictions), as
benchmarks/quant_fidelity.py does for ONNX: top-1 agreement with PyTorch fp32, logits SQNR (dB, mean
over images), ImageNet top-1. Latency: the fold-0 files on LiteRT (ai-edge-litert, XNNPACK), 1 thread,
batch 1, interleaved round by round in one process, CPU-time p50, as a ratio to `grid`. About 15 min.

Usage (torch side; needs litert-torch, see docs/tflite.md):

    PYTHONPATH=$PWD python benchmarks/tflite_recipes.py --out benchmarks/tflite_recipes
"""

from __future__ import annotations

import argparse
import csv
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mobilenet_edge.build.tflite.records import interpreter, raw_invoke  # noqa: E402
from mobilenet_edge.build.tflite_export import export_tflite  # noqa: E402
from mobilenet_edge.build.weights import load_weights  # noqa: E402
from mobilenet_edge.core import images, jsonio  # noqa: E402
from mobilenet_edge.core.bundle import check_can_write  # noqa: E402
from mobilenet_edge.core.errors import UsageError  # noqa: E402
from mobilenet_edge.core.labels import background_offset  # noqa: E402
from mobilenet_edge.core.versions import TFLITE_TOOLS, versions  # noqa: E402
from mobilenet_edge.runtime.runner import Runner  # noqa: E402
from mobilenet_edge.runtime.scores import quantize  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
VARIANTS = [(0.25, 128, "0.25_128"), (0.5, 160, "0.5_160"), (0.75, 192, "0.75_192")]
#: name -> export_tflite keyword arguments
RECIPES = {
    "plain": {"recipe": "plain"},
    "grid": {"recipe": "grid"},
    "fidelity, --float-first 0 (full integer)": {"recipe": "fidelity", "float_first": 0},
    "fidelity (default)": {"recipe": "fidelity"},
}


def sqnr_per_image(f: np.ndarray, q: np.ndarray) -> np.ndarray:
    f, q = f.astype(np.float64), q.astype(np.float64)
    return 10 * np.log10((f**2).sum(1) / ((f - q) ** 2).sum(1))


def latency(paths: dict[str, Path], *, rounds: int, runs: int) -> dict[str, float]:
    """CPU-time p50 (ms) of each file, models interleaved round by round (shared, noisy machine)."""
    models = {k: interpreter(p, threads=1) for k, p in paths.items()}
    feeds = {}
    for k, m in models.items():
        inp = m.get_input_details()[0]
        x = np.random.default_rng(0).uniform(-1, 1, inp["shape"]).astype(np.float32)
        scale, zp = inp["quantization"]
        feeds[k] = quantize(x, scale, zp, inp["dtype"]) if scale else x.astype(inp["dtype"])
        for _ in range(10):
            raw_invoke(m, feeds[k])
    times: dict[str, list[float]] = {k: [] for k in models}
    for _ in range(rounds):
        for k, m in models.items():
            t = time.process_time_ns()
            for _ in range(runs):
                raw_invoke(m, feeds[k])
            times[k].append((time.process_time_ns() - t) / runs / 1e6)
    return {k: float(np.median(v)) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "tflite_recipes"))
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--force", action="store_true", help="replace existing result files (committed ones included)")
    a = ap.parse_args()
    try:  # never replace results without --force (issue #20)
        for f in (Path(a.out).with_suffix(".json"), Path(a.out).with_suffix(".md")):
            check_can_write(f, "--out", force=a.force)
    except UsageError as e:
        ap.error(str(e))
    data = Path(a.data)
    calib = data / "imagenet-calib"
    rows_csv = list(csv.DictReader(open(calib / "labels.csv", encoding="utf-8")))
    labels = np.array([int(r["imagenet_index"]) for r in rows_csv])
    res = {"created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), "tool_versions": versions(TFLITE_TOOLS),
           "machine": {"cpu": platform.processor() or platform.machine(), "python": platform.python_version()},
           "protocol": "2-fold over imagenet-calib (even/odd positions of labels.csv), pooled 100 images; "
                       "latency: fold-0 files, LiteRT 1 thread, CPU-time p50, interleaved",
           "variants": []}
    with tempfile.TemporaryDirectory(prefix="tflite-recipes-") as td:
        for alpha, r, tag in VARIANTS:
            model = load_weights(data / "reference" / f"mobilenet_v1_{tag}_quant.tflite", alpha=alpha).model.eval()
            x = np.stack([images.load(calib / row["file"], images.Preprocessing(res=r)) for row in rows_csv])
            with torch.no_grad():
                ref = model(torch.from_numpy(x)).numpy()
            offset = background_offset(ref.shape[1])
            row = {"variant": tag, "alpha": alpha, "res": r, "fp32_top1": float(np.mean(ref.argmax(1) - offset == labels)),
                   "recipes": {}}
            paths = {}
            for name, kw in RECIPES.items():
                q = np.zeros_like(ref)
                recs = []
                for fold in (0, 1):
                    cal, chk = (np.arange(0, len(x), 2), np.arange(1, len(x), 2))[:: 1 if fold == 0 else -1]
                    dst = Path(td) / f"{tag}_{len(paths)}_{fold}.int8.tflite"
                    rec = export_tflite(model, dst, res=r, int8=True, calib=[x[cal]], check=[x[chk][:4]], **kw)
                    q[chk] = Runner(dst, threads=1).run(x[chk].transpose(0, 2, 3, 1))
                    recs.append(rec)
                    if fold == 0:
                        paths[name] = dst
                s = sqnr_per_image(ref, q)
                qr = recs[0]["quantization"]
                row["recipes"][name] = {
                    "agreement_top1": float(np.mean(ref.argmax(1) == q.argmax(1))),
                    "sqnr_db_mean": float(s.mean()), "sqnr_db_worst": float(s.min()),
                    "int8_top1": float(np.mean(q.argmax(1) - offset == labels)),
                    "size_mb": recs[0]["size"] / 1e6, "input_dtype": recs[0]["input"]["dtype"],
                    "recipe": qr["recipe"], "weight_grid": qr["weight_grid"], "bias_correction": qr.get("bias_correction"),
                }
                m = row["recipes"][name]
                print(f"{tag} {name}: agree {m['agreement_top1']:.0%} SQNR {m['sqnr_db_mean']:.2f} dB "
                      f"top-1 {m['int8_top1']:.0%}", file=sys.stderr, flush=True)
            lat = latency(paths, rounds=a.rounds, runs=a.runs)
            for name, ms in lat.items():
                row["recipes"][name]["p50_ms"] = ms
                row["recipes"][name]["latency_vs_grid"] = ms / lat["grid"]
            res["variants"].append(row)
    out = Path(a.out)
    out.with_suffix(".json").write_text(jsonio.dumps(res, indent=1) + "\n")
    lines = ["# int8 .tflite by recipe", "",
             f"Generated by `benchmarks/tflite_recipes.py` on {res['created']} (litert-torch "
             f"{res['tool_versions'].get('litert-torch', '?')}, ai-edge-litert {res['tool_versions'].get('ai-edge-litert', '?')}). "
             "Weights imported from Google's reference files. 2-fold cross evaluation over imagenet-calib (calibrate "
             "on 50, evaluate on the other 50, swap, pool 100): top-1 agreement with PyTorch fp32 / logits SQNR "
             "(mean over images) / ImageNet top-1 of the int8 file. Latency: LiteRT (XNNPACK) on this x86 machine, "
             "1 thread, CPU-time p50, files interleaved in one process, relative to `grid`.", ""]
    for row in res["variants"]:
        lines += [f"## mobilenet_v1_{row['variant']} (fp32 top-1 {row['fp32_top1']:.0%})", "",
                  "| recipe | agreement | logits SQNR | int8 top-1 | input | size | LiteRT p50 (x86) |",
                  "|---|---|---|---|---|---|---|"]
        for name, m in row["recipes"].items():
            lines.append(f"| {name} | {m['agreement_top1']:.0%} | {m['sqnr_db_mean']:.1f} dB | {m['int8_top1']:.0%} | "
                         f"{m['input_dtype']} | {m['size_mb']:.2f} MB | {m['p50_ms']:.3f} ms ({m['latency_vs_grid']:.2f}x) |")
        lines.append("")
    out.with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
