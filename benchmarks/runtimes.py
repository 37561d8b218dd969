"""Which runtime runs each file fastest on this machine? ONNX Runtime vs OpenVINO vs LiteRT (issue #21).

For each bundle (fp32 and int8 ``.onnx``, fp32 and int8 ``.tflite`` when present) every (file, runtime)
pair that can run here is benched at each thread count with the package's own bench
(``mobilenet_edge.runtime.bench``: a fresh worker process per measurement, batch 1, ``--runs`` timed
runs after ``--warmup``), plus Google's int8 ``.tflite`` of the same (alpha, res) on LiteRT as the
anchor. All measurements are taken in one run, round-robin over ``--repeats`` rounds (so a burst of
load from another process hits every pair alike); a pair's p50 is the median of its rounds' p50s, with
the rounds' min-max beside it. Ratios are only ever between numbers of this one run.

Run (about 10 minutes on 2 cores):

    PYTHONPATH=$PWD python benchmarks/runtimes.py export/mobilenet_v1_0.25_128 export/mobilenet_v1_0.50_160 \\
        export/mobilenet_v1_0.75_192 export/mobilenet_v1_1.0_224 --reference ../shared/data/reference \\
        --threads 1,2 --out benchmarks/runtimes

writes ``runtimes.json`` (environment, every round's row, the summary, the winners) and prints the
tables of ``runtimes.md``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mobilenet_edge.core import jsonio  # noqa: E402
from mobilenet_edge.core.bundle import check_can_write  # noqa: E402
from mobilenet_edge.core.errors import UsageError  # noqa: E402
from mobilenet_edge.core.platform_info import environment  # noqa: E402
from mobilenet_edge.runtime import bench as B  # noqa: E402
from mobilenet_edge.runtime.names import RUNTIMES  # noqa: E402
from mobilenet_edge.runtime.report import device_name, fastest  # noqa: E402


def targets(bundles: list[Path], reference: Path | None) -> list[B.Target]:
    """Every (file, runtime) pair of each bundle, then Google's int8 .tflite of its (alpha, res)."""
    out = []
    for b in bundles:
        ts = B.targets_for(b, runtimes=RUNTIMES)
        out += ts
        alpha, res = ts[0].alpha, ts[0].res
        if reference is not None and alpha is not None:
            ref = reference / f"mobilenet_v1_{alpha:g}_{res}_quant.tflite"
            if ref.is_file():
                out += [replace(t, variant=ts[0].variant) for t in B.targets_for(ref)]
    return out


def measure_all(ts: list[B.Target], threads: list[int], *, runs: int, warmup: int, repeats: int) -> list[dict]:
    """Round-robin: every (target, threads) once per round; one row per measurement (``round`` added)."""
    rows = []
    jobs = [(t, n) for t in ts for n in threads]
    for k in range(repeats):
        for i, (t, n) in enumerate(jobs):
            print(f"round {k + 1}/{repeats} [{i + 1}/{len(jobs)}] {t.label} {t.runtime} x{n}", file=sys.stderr, flush=True)
            m = B.measure_in_subprocess(t, threads=n, runs=runs, warmup=warmup)
            rows.append({**B.result_row(t, m, threads=n, runs=runs), "round": k})
    return rows


def summarize(rows: list[dict]) -> list[dict]:
    """One row per (model, runtime, threads): median p50 over rounds, the rounds' min and max."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["model"], r["runtime"], r["threads"]), []).append(r)
    out = []
    for rs in groups.values():
        p50s = [r["p50_ms"] for r in rs]
        first = rs[0]
        out.append({k: first[k] for k in ("model", "variant", "alpha", "res", "precision", "runtime", "threads",
                                           "runtime_version", "macs")}
                   | {"p50_ms": statistics.median(p50s), "p50_min_ms": min(p50s), "p50_max_ms": max(p50s),
                      "rounds": len(p50s), "init_ms": statistics.median(r["init_ms"] for r in rs),
                      **({"execution": first["execution"]} if first.get("execution") else {})})
    return out


def markdown(summary: list[dict], fast: list[dict], env: dict, args) -> str:
    """The tables of runtimes.md: p50 per (variant, file, runtime, threads) and the winner per point."""
    threads = sorted({r["threads"] for r in summary})
    lines = [f"Machine: {device_name(env)}, {env.get('cores') or '?'} cores; "
             f"onnxruntime {env.get('onnxruntime')}, openvino {env.get('openvino')}, "
             f"ai-edge-litert {env.get('ai_edge_litert')}. {args.repeats} rounds x {args.runs} runs "
             f"(warm-up {args.warmup}), batch 1; p50 ms = median over rounds of each round's p50 "
             "(min-max of the rounds in brackets).", ""]
    head = "| variant | file | runtime | " + " | ".join(f"p50 ms x{n}" for n in threads) + " |"
    lines += [head, "|" + "---|" * (3 + len(threads))]
    keyed = {(r["model"], r["runtime"], r["threads"]): r for r in summary}
    seen = []
    for r in summary:
        if (r["model"], r["runtime"]) not in seen:
            seen.append((r["model"], r["runtime"]))
    for model, runtime in seen:
        cells = []
        for n in threads:
            r = keyed.get((model, runtime, n))
            cells.append("-" if r is None else f"{r['p50_ms']:.3f} ({r['p50_min_ms']:.3f}-{r['p50_max_ms']:.3f})")
        v = next(r["variant"] for r in summary if r["model"] == model)
        lines.append(f"| {v} | {Path(model).name} | {runtime} | " + " | ".join(cells) + " |")
    lines += ["", "Fastest per point (our files; Google's int8 .tflite is the anchor, not a candidate):", "",
              "| variant | threads | fastest | p50 ms | runner-up | p50 ms | ratio | Google int8 .tflite (LiteRT) p50 ms |",
              "|---|---|---|---|---|---|---|---|"]
    for f in fast:
        ref = next((r for r in summary if r["variant"] == f["variant"] and r["threads"] == f["threads"]
                    and r["model"].endswith("_quant.tflite")), None)
        u = f["runner_up"]
        lines.append(f"| {f['variant']} | {f['threads']} | {Path(f['model']).name} on {f['runtime']} | {f['p50_ms']:.3f} "
                     f"| {Path(u['model']).name} on {u['runtime']} | {u['p50_ms']:.3f} | {f['ratio']:.2f}x | "
                     f"{'-' if ref is None else format(ref['p50_ms'], '.3f')} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundles", nargs="+", type=Path)
    ap.add_argument("--reference", type=Path, help="folder of Google's *_quant.tflite files")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/runtimes"))
    ap.add_argument("--force", action="store_true", help="replace existing result files (committed ones included)")
    args = ap.parse_args(argv)
    try:  # never replace results without --force (issue #20)
        for f in (Path(f"{args.out}.json"),):
            check_can_write(f, "--out", force=args.force)
    except UsageError as e:
        ap.error(str(e))
    threads = [int(v) for v in args.threads.split(",")]
    env = environment()
    started = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    rows = measure_all(targets(args.bundles, args.reference), threads, runs=args.runs, warmup=args.warmup,
                       repeats=args.repeats)
    summary = summarize(rows)
    fast = fastest(summary)
    doc = {"environment": env, "started": started, "settings": {"runs": args.runs, "warmup": args.warmup,
           "repeats": args.repeats, "threads": threads}, "summary": summary, "fastest": fast, "results": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{args.out}.json").write_text(jsonio.dumps(doc, indent=1) + "\n", encoding="utf-8")
    print(markdown(summary, fast, env, args))  # the tables of runtimes.md
    return 0


if __name__ == "__main__":
    sys.exit(main())
