"""Issue #9 acceptance: our int8 .tflite (litert-torch PT2E) vs Google's reference int8 .tflite.

Measures, on the same machine and in the same run:
- top-1 on ../shared/data/imagenet-calib (100 labelled images; TF-slim 1001 classes: index - 1 ==
  ImageNet index) for PyTorch fp32, our fp32 and int8 .tflite, and Google's reference file;
- int8 fidelity vs PyTorch fp32 (top-1 agreement, logits SQNR dB) on the same images;
- LiteRT latency (ai_edge_litert, num_threads=1): the models are invoked in alternation, one call
  each per round, after a warm-up; p50/p90/p99/mean/min in ms, and the ratio ours/Google of p50.

Usage (torch side; needs litert-torch):

    PYTHONPATH=$PWD python benchmarks/tflite_vs_reference.py \
        --weights ../shared/data/reference/mobilenet_v1_0.5_160_quant.tflite --out benchmarks/results

``--weights`` needs ``mobilenet_edge.build.weights`` (TF-slim import); without it the model has random
weights (BN statistics from ``model.calibrate_bn``) and top-1 figures mean nothing.
"""

from __future__ import annotations

import argparse
import csv
import json
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

from mobilenet_edge.build.tflite.records import interpreter, raw_invoke  # noqa: E402
from mobilenet_edge.build.tflite_export import export_tflite  # noqa: E402
from mobilenet_edge.core import images, jsonio  # noqa: E402
from mobilenet_edge.core.bundle import check_can_write  # noqa: E402
from mobilenet_edge.core.errors import UsageError  # noqa: E402
from mobilenet_edge.core.labels import background_offset  # noqa: E402
from mobilenet_edge.core.versions import TFLITE_TOOLS, versions  # noqa: E402
from mobilenet_edge.quantize.fidelity import sqnr_db  # noqa: E402
from mobilenet_edge.runtime.runner import Runner  # noqa: E402

DATA = Path(os.environ.get("MOBILENET_EDGE_DATA", ROOT.parent / "shared" / "data"))


def load_model(weights: str | None, alpha: float, res: int):
    import torch

    from mobilenet_edge.build.model import MobileNetV1, calibrate_bn

    if weights:
        from mobilenet_edge.build.weights import load_weights

        return load_weights(weights, alpha=alpha).model.eval(), "tflite"
    torch.manual_seed(0)
    model = MobileNetV1(alpha=alpha, num_classes=1001, padding="tf_same")
    return calibrate_bn(model, res), "random"


def latency(paths: dict[str, Path], *, runs: int, warmup: int) -> dict:
    """Alternate the models, one raw invoke each per round; per-model stats in ms."""
    models = {name: interpreter(p, threads=1) for name, p in paths.items()}
    feeds = {}
    for name, m in models.items():
        inp = m.get_input_details()[0]
        x = np.zeros(inp["shape"], inp["dtype"])
        feeds[name] = x
        for _ in range(warmup):
            raw_invoke(m, x)
    times = {name: [] for name in models}
    for _ in range(runs):
        for name, m in models.items():
            t = time.perf_counter_ns()
            raw_invoke(m, feeds[name])
            times[name].append((time.perf_counter_ns() - t) / 1e6)
    out = {}
    for name, ts in times.items():
        a = np.asarray(ts)
        out[name] = {
            "p50": float(np.percentile(a, 50)),
            "p90": float(np.percentile(a, 90)),
            "p99": float(np.percentile(a, 99)),
            "mean": float(a.mean()),
            "std": float(a.std()),
            "min": float(a.min()),
            "runs": runs,
        }
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", help="TF-slim .tflite or checkpoint (needs mobilenet_edge.build.weights)")
    ap.add_argument("--alpha", type=float, default=0.5)
    ap.add_argument("--res", type=int, default=160)
    ap.add_argument("--reference", default=str(DATA / "reference" / "mobilenet_v1_0.5_160_quant.tflite"))
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--workdir", default=None, help="keep the .tflite files here (default: a temporary folder)")
    ap.add_argument("--force", action="store_true", help="replace an existing result file (committed ones included)")
    args = ap.parse_args()

    import torch

    model, source = load_model(args.weights, args.alpha, args.res)
    tag = f"{args.alpha:.2f}_{args.res}"
    try:  # never replace results without --force (issue #20); checked before the long run
        check_can_write(Path(args.out) / f"tflite_{tag}_{source}.json", "--out", force=args.force)
    except UsageError as e:
        ap.error(str(e))
    prep = images.Preprocessing(res=args.res)
    calib_dir = DATA / "imagenet-calib"
    rows = list(csv.DictReader(open(calib_dir / "labels.csv", encoding="utf-8")))
    paths = [calib_dir / r["file"] for r in rows]
    labels = np.array([int(r["imagenet_index"]) + background_offset(1001) for r in rows])  # 1001-class index
    x_nchw = np.stack([images.load(p, prep) for p in paths])  # (100, 3, res, res)
    photos = [x for _, x in images.iter_batches(images.expand_paths([DATA / "images"]), prep, batch=8)]

    tmp = None if args.workdir else tempfile.TemporaryDirectory(prefix="tflite-vs-reference-")
    work = Path(args.workdir or tmp.name)  # model files stay out of --out (results are committed)
    work.mkdir(parents=True, exist_ok=True)
    rec_fp32 = export_tflite(model, work / f"model_{tag}.tflite", res=args.res, check=photos + [x_nchw])
    rec_int8 = export_tflite(
        model, work / f"model_{tag}.int8.tflite", res=args.res, int8=True, calib=[x_nchw], check=[x_nchw]
    )

    # held-out check: calibrate on the even-indexed 50 images, evaluate on the odd-indexed 50
    rec_half = export_tflite(
        model, work / f"model_{tag}.int8.half.tflite", res=args.res, int8=True, calib=[x_nchw[::2]], check=[x_nchw[1::2]]
    )

    with torch.no_grad():
        ref = model.eval()(torch.from_numpy(x_nchw)).numpy()
    x_nhwc = x_nchw.transpose(0, 2, 3, 1)
    ours8 = Runner(work / rec_int8["file"], threads=1)
    ours32 = Runner(work / rec_fp32["file"], threads=1)
    google = Runner(args.reference, threads=1)
    y8, y32, yg = ours8.run(x_nhwc), ours32.run(x_nhwc), google.run(x_nhwc)

    def top1(y):
        return float((y.argmax(1) == labels).mean())

    result = {
        "what": "issue #9: our int8 .tflite vs Google's reference int8 .tflite",
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "variant": {"alpha": args.alpha, "res": args.res},
        "weights": source if not args.weights else f"{source}: {Path(args.weights).name}",
        "data": {"images": str(calib_dir.name), "n": len(paths),
                 "note": "int8 calibrated on the same 100 images it is evaluated on (in-sample)"},
        "top1": {
            "torch_fp32": top1(ref),
            "ours_fp32_tflite": top1(y32),
            "ours_int8_tflite": top1(y8),
            "google_int8_tflite": top1(yg),
        },
        "int8_vs_torch_fp32": {
            "top1_agreement": float((ref.argmax(1) == y8.argmax(1)).mean()),
            "sqnr_db": sqnr_db(ref, y8),
        },
        "google_vs_torch_fp32_top1_agreement": float((ref.argmax(1) == yg.argmax(1)).mean()),
        "files": {"fp32": rec_fp32, "int8": rec_int8},
    }
    half = Runner(work / rec_half["file"], threads=1)
    odd = slice(1, None, 2)
    result["heldout"] = {
        "calibration": "even-indexed 50 images", "evaluation": "odd-indexed 50 images",
        "top1_ours_int8": float((half.run(x_nhwc[odd]).argmax(1) == labels[odd]).mean()),
        "top1_google_int8": float((yg[odd].argmax(1) == labels[odd]).mean()),
        "top1_torch_fp32": float((ref[odd].argmax(1) == labels[odd]).mean()),
        "fidelity_vs_torch_fp32": rec_half["quantization"]["fidelity"],
    }
    del half
    result["top1"]["ours_int8_minus_google_points"] = 100 * (
        result["top1"]["ours_int8_tflite"] - result["top1"]["google_int8_tflite"]
    )
    lat = latency({"ours_int8": ours8.path, "google_int8": google.path, "ours_fp32": ours32.path}, runs=args.runs,
                  warmup=args.warmup)
    result["latency_ms"] = lat
    result["latency_ratio_p50_ours_int8_over_google"] = lat["ours_int8"]["p50"] / lat["google_int8"]["p50"]
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    flags = next((ln.split(":", 1)[1].split() for ln in open("/proc/cpuinfo") if ln.startswith("flags")), [])
    result["environment"] = {
        "cpu": cpu,
        "arch": platform.machine(),
        "isa": sorted(f for f in flags if f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "asimddp")),
        "cores": os.cpu_count(),
        "threads": 1,
        "python": platform.python_version(),
        "versions": versions(TFLITE_TOOLS),
        "note": "shared machine (other jobs running); ratios are measured in one run, alternating models",
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dst = out / f"tflite_{tag}_{source}.json"
    dst.write_text(jsonio.dumps(result, indent=2) + "\n")
    keys = ("top1", "int8_vs_torch_fp32", "heldout", "latency_ratio_p50_ours_int8_over_google")
    summary = {k: result[k] for k in keys}
    summary["p50_ms"] = {k: round(v["p50"], 3) for k, v in lat.items()}
    print(json.dumps(summary, indent=2))
    print(f"wrote {dst}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
