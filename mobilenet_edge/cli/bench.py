"""``mobilenet-edge bench`` and ``mobilenet-edge report``: latency tables, JSON/CSV, plots (no torch)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..core.bundle import check_can_write
from ..core.errors import MobilenetEdgeError, UsageError
from .app import NO_VERIFY_HELP, app, err, out, warn_no_verify

BENCH_EPILOG = (
    "Examples:\n\n"
    "  mobilenet-edge bench export/mobilenet_v1_0.50_160 --threads 1,4 --runs 100 --json bench.json\n\n"
    "  mobilenet-edge bench export/mobilenet_v1_0.50_160 mobilenet_v1_0.5_160_quant.tflite --threads 1\n\n"
    "  mobilenet-edge bench --grid --weights-dir reference/ --calib imagenet-calib/ --out benchmarks/results\n\n"
    "  mobilenet-edge bench export/mobilenet_v1_0.50_160 --runtimes ort,openvino --threads 1,2\n\n"
    "  mobilenet-edge bench export/mobilenet_v1_0.50_160 --on pi4,pi5 --threads 1,4 --json fleet.json\n\n"
    "Each (model, runtime, threads) runs in a fresh worker process: creation and first inference are reported\n"
    "apart, then --warmup untimed runs, then --runs timed runs (perf_counter_ns, batch 1). A bundle is benched\n"
    "on every (file, runtime) pair that can run here (.onnx: ONNX Runtime, and OpenVINO when installed;\n"
    ".tflite: LiteRT); the table ends with the fastest per thread count and its ratio to the runner-up."
)

REPORT_EPILOG = (
    "Examples:\n\n"
    "  mobilenet-edge report benchmarks/results/*.json --plot latency.png\n\n"
    "  mobilenet-edge report x86.json pi5.json --csv merged.csv\n\n"
    "The table ends with the fastest (file, runtime) per device, model and thread count."
)


def parse_int_list(text: str, name: str, *, minimum: int = 1) -> list[int]:
    """'1,4' -> [1, 4]; raises UsageError naming the option and the value."""
    try:
        vals = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"{name} must be a comma-separated list of integers, got {text!r}") from None
    if not vals:
        raise UsageError(f"{name} needs at least one integer, got {text!r}")
    bad = [v for v in vals if v < minimum]
    if bad:  # name the item, not only the list
        raise UsageError(f"{name} values must be >= {minimum}, got {bad[0]} in {text!r}")
    return list(dict.fromkeys(vals))  # '1,1' benches once


def parse_runtimes(text: str | None, name: str = "--runtimes") -> list[str] | None:
    """'ort,openvino' -> ["onnxruntime", "openvino"] (runtime names of runtime/names.py); None stays None.

    Raises:
        UsageError: an unknown runtime (naming the option).
        MobilenetEdgeError: openvino asked for but not installed (with the pip command).
    """
    if text is None:
        return None
    from ..runtime.names import RUNTIME_OPENVINO, runtime_name

    try:
        vals = list(dict.fromkeys(runtime_name(v) for v in text.split(",") if v.strip()))
    except ValueError as e:
        raise UsageError(f"{name}: {e}") from None
    if not vals:
        raise UsageError(f"{name} needs at least one of ort, openvino, litert")
    if RUNTIME_OPENVINO in vals:
        from ..core.openvino_session import openvino_available
        from ..runtime.openvino_backend import MISSING

        if not openvino_available():
            raise MobilenetEdgeError(MISSING)
    return vals


def parse_float_list(text: str, name: str) -> list[float]:
    try:
        vals = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"{name} must be a comma-separated list of numbers, got {text!r}") from None
    if not vals or any(not math.isfinite(v) or v <= 0 for v in vals):
        raise UsageError(f"{name} values must be finite numbers > 0, got {text!r}")
    return vals


@app.command(epilog=BENCH_EPILOG)
def bench(
    models: Annotated[Optional[list[Path]], typer.Argument(help="Bundle folders and/or .onnx/.tflite files.")] = None,
    threads: Annotated[str, typer.Option(help="Thread counts to bench, comma-separated.")] = "1",
    runs: Annotated[int, typer.Option(help="Timed runs per model and thread count (>= 1).")] = 100,
    warmup: Annotated[int, typer.Option(help="Untimed warm-up runs (>= 0).")] = 10,
    json_path: Annotated[Optional[Path], typer.Option("--json", help="Write results JSON here ('-' = stdout).")] = None,
    csv_path: Annotated[Optional[Path], typer.Option("--csv", help="Write results CSV here.")] = None,
    eval_dir: Annotated[Optional[Path], typer.Option("--eval", help="Labelled images: add top-1 per model.")] = None,
    grid: Annotated[bool, typer.Option("--grid", help="Export + quantize + bench the alpha x res grid (export extra).")] = False,
    alphas: Annotated[str, typer.Option(help="--grid: width multipliers.")] = "1,0.75,0.5,0.25",
    res: Annotated[str, typer.Option("--res", help="--grid: resolutions.")] = "224,192,160,128",
    weights_dir: Annotated[Optional[Path], typer.Option(help="--grid: folder of .tflite/.safetensors weights.")] = None,
    calib: Annotated[Optional[Path], typer.Option(help="--grid: calibration images (else synthetic).")] = None,
    out_dir: Annotated[Path, typer.Option("--out", help="--grid: results folder (bundles go to OUT/bundles).")] = Path("benchmarks/results"),
    tflite: Annotated[bool, typer.Option("--tflite", help="--grid: also export our fp32 and int8 .tflite (litert-torch; "
                                         "needs --calib) and bench them on LiteRT next to ORT.")] = False,
    on: Annotated[Optional[str], typer.Option("--on", help="Bench on these devices over SSH instead: HOST[:DIR],... "
                                              "(bundles pushed first; see `push --help`).")] = None,
    remote_cmd: Annotated[Optional[str], typer.Option("--remote-cmd", help="--on: the devices' mobilenet-edge.")] = None,
    runtimes: Annotated[Optional[str], typer.Option("--runtimes", help="Runtimes to bench, comma-separated: ort, "
                                                    "openvino, litert (default: every one that runs here; "
                                                    "--grid: ort and litert).")] = None,
    wide: Annotated[bool, typer.Option("--wide", help="Every column (init, first run, p90, std, inf/s, GMAC/s, "
                                       "RSS, size) and full file names; the default fits 80 columns.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace existing --json/--csv files (--grid: the results "
                                        "in --out).")] = False,
    no_verify: Annotated[bool, typer.Option("--no-verify", help=NO_VERIFY_HELP)] = False,
) -> None:
    """Latency of .onnx (ONNX Runtime, OpenVINO) and .tflite (LiteRT) models: init, first run, p50/p90/p99, inf/s, RSS."""
    from ..core.platform_info import environment
    from ..runtime import bench as B

    thread_list = parse_int_list(threads, "--threads")
    runtime_list = parse_runtimes(runtimes)
    if runs < 1:
        raise UsageError(f"--runs must be >= 1, got {runs}")
    if warmup < 0:
        raise UsageError(f"--warmup must be >= 0, got {warmup}")
    for name, path in (("--json", json_path), ("--csv", csv_path)):
        if path is not None and str(path) != "-":
            check_can_write(path, name, force=force)  # before any work, not after the benchmark
    warn_no_verify(no_verify)
    if on is not None:  # issue #19: the devices' own bench, one column per device
        from .push import bench_on_hosts

        if grid or eval_dir is not None or not models:
            raise UsageError("bench --on takes bundle folders (not --grid or --eval)")
        bench_args = ["--threads", threads, "--runs", str(runs), "--warmup", str(warmup)]
        bench_args += (["--runtimes", runtimes] if runtimes else []) + (["--no-verify"] if no_verify else [])
        return bench_on_hosts(models, on, bench_args=bench_args, remote_cmd=remote_cmd, json_path=json_path,
                              csv_path=csv_path)
    if not grid:
        ignored = [n for n, v in (("--weights-dir", weights_dir), ("--calib", calib), ("--tflite", tflite or None)) if v is not None]
        if ignored:
            err.print(f"warning: {', '.join(ignored)} apply to --grid only; ignored", markup=False)
    if grid:
        if models:
            raise UsageError("--grid builds its own models: give either model paths or --grid, not both")
        return _grid(alphas=parse_float_list(alphas, "--alphas"), resolutions=parse_int_list(res, "--res", minimum=32),
                     threads=thread_list, runs=runs, warmup=warmup, weights_dir=weights_dir, calib=calib,
                     eval_dir=eval_dir, out_dir=out_dir, tflite=tflite, runtimes=runtime_list, force=force)
    if not models:
        raise UsageError("give at least one bundle folder or model file (or --grid)")
    targets = [t for m in models for t in B.targets_for(m, runtimes=runtime_list, verify=not no_verify)]
    env = environment()
    top1 = {}
    if eval_dir is not None:
        top1 = _top1_for(targets, eval_dir, verify=not no_verify)
    rows, failures = run_targets(targets, thread_list, runs=runs, warmup=warmup, env=env, json_path=json_path,
                                 csv_path=csv_path, top1=top1)
    to_stdout = json_path is not None and str(json_path) == "-"
    _print(rows, failures, env, console=err if to_stdout else out, wide=wide)  # stdout carries only JSON with --json -
    if to_stdout:
        from ..core import jsonio
        from ..runtime.report import fastest

        print(jsonio.dumps({"environment": env, "results": rows, "failures": failures, "fastest": fastest(rows)},
                           indent=2))
    if failures:
        raise typer.Exit(1)


def _grid(*, weights_dir, calib, eval_dir, out_dir, tflite: bool, runtimes, force: bool, **kwargs) -> None:
    """``bench --grid``: its folder checks before any work, then :func:`~mobilenet_edge.build.grid.run_grid`."""
    from ..build.grid import check_results_absent
    from ..core.images import image_folder

    if weights_dir is not None and not weights_dir.is_dir():
        raise UsageError(f"--weights-dir {weights_dir}: no such folder")
    for name, folder in (("--calib", calib), ("--eval", eval_dir)):
        if folder is not None:
            image_folder(folder, name)
    check_can_write(out_dir, "--out", folder=True)
    check_results_absent(out_dir, force=force)  # the README's command must not rewrite committed results
    _require_grid_packages(tflite=tflite)
    if tflite and calib is None:
        raise UsageError("--grid --tflite needs --calib DIR: the int8 .tflite is calibrated on real images")
    from ..build.grid import run_grid

    run_grid(weights_dir=weights_dir, calib=calib, eval_dir=eval_dir, out_dir=out_dir, out=out, err=err, tflite=tflite,
             force=force, **kwargs, **({"runtimes": runtimes} if runtimes else {}))


def _require_grid_packages(*, tflite: bool = False) -> None:
    """--grid exports with torch (and litert-torch for --tflite) and plots with matplotlib: say so once,
    before any work (exit 1)."""
    from importlib.util import find_spec

    for module in ("torch", "onnxsim"):
        if find_spec(module) is None:
            raise MobilenetEdgeError(f"bench --grid needs {module}: pip install 'mobilenet-edge[export]' torch==2.13.0")
    if tflite and find_spec("litert_torch") is None:
        raise MobilenetEdgeError("bench --grid --tflite needs litert-torch: "
                                 "pip install 'mobilenet-edge[tflite-export]' torch==2.13.0")
    if find_spec("matplotlib") is None:
        raise MobilenetEdgeError("bench --grid needs matplotlib: pip install 'mobilenet-edge[plot]'")


def run_targets(targets, thread_list, *, runs, warmup, env, json_path=None, csv_path=None, top1=None):
    """Bench every (target, threads) in a worker process (:func:`~mobilenet_edge.runtime.bench.bench_targets`)
    with a progress bar; write JSON/CSV after each job (Ctrl-C keeps them)."""
    from ..core.progress import progress_bar
    from ..runtime import bench as B
    from ..runtime import report as R

    targets = list(targets)
    with progress_bar(err) as prog:
        task = prog.add_task("bench", total=len(targets) * len(thread_list))

        def start(t, n):
            prog.update(task, description=f"{t.label} x{n} thread{'s' if n > 1 else ''}")

        shown = 0

        def done(rows, failures):
            nonlocal shown
            for f in failures[shown:]:
                err.print(f"failed {f['model']}: {f['error']}", style="red")
            shown = len(failures)
            if csv_path is not None and rows:
                R.write_csv(csv_path, rows)
            if json_path is not None and str(json_path) != "-":  # the same document as --json -
                R.write_results(json_path, env, rows, failures, fastest_rows=R.fastest(rows))
            prog.advance(task)

        return B.bench_targets(targets, thread_list, runs=runs, warmup=warmup, top1=top1, on_start=start, on_done=done)


def _top1_for(targets, eval_dir: Path, *, verify: bool = True) -> dict:
    """Top-1 of each (file, runtime) target on ``eval_dir``; one warning per bundle (or lone file) with random weights."""
    from ..core.manifest import MANIFEST, Manifest
    from ..runtime.evaluate import POSITION_WARNING, evaluate, random_weights_warning, weights_source

    res, warned, rules = {}, set(), set()
    for t in targets:
        err.print(f"top-1 of {t.label} on {eval_dir}", style="dim")
        folder = t.path.parent
        manifest = Manifest.read(folder) if (folder / MANIFEST).is_file() else None
        key = folder if manifest is not None else t.path
        if manifest is not None and key not in warned and weights_source(None, manifest) == "random":
            err.print(f"warning: {folder.name}: {random_weights_warning(manifest)}", markup=False)
        warned.add(key)

        def warn(m, t=t, lone=manifest is None):
            if lone or m == POSITION_WARNING:  # random weights of a lone file: its own metadata decides
                err.print(f"warning: {t.label}: {m}", markup=False)

        r = evaluate(t.path, eval_dir, warn=warn, runtime=t.runtime, verify=verify)
        res[t.path, t.runtime] = r["top1"]
        if r["ground_truth"] not in rules:  # the rule that mapped files to classes, said once per rule
            rules.add(r["ground_truth"])
            err.print(f"top-1 ground truth: {r['ground_truth']}", markup=False)
    return res


def _print(rows, failures, env, console=out, *, wide: bool = False) -> None:
    from ..runtime import report as R
    from ..runtime.names import ENV_VERSION_KEYS

    versions = ", ".join(f"{k.replace('_', '-')} {env[k]}" for k in ENV_VERSION_KEYS if env.get(k))
    console.print(R.table(rows, title=f"{R.device_name(env)} — {versions}", wide=wide))
    for line in R.ratio_lines(rows):
        console.print(line)
    for line in R.fastest_lines(R.fastest(rows)):
        console.print(line, markup=False)
    for f in failures:
        console.print(f"FAILED {f['model']} (threads {f['threads']}): {f['error']}", style="red", markup=False)


@app.command(epilog=REPORT_EPILOG)
def report(
    files: Annotated[list[Path], typer.Argument(help="Result JSON files from bench (several machines welcome).")],
    plot: Annotated[Optional[Path], typer.Option(help="Write a latency-vs-MACs plot here (.png, .pdf or .svg).")] = None,
    csv_path: Annotated[Optional[Path], typer.Option("--csv", help="Write the merged rows as CSV.")] = None,
    wide: Annotated[bool, typer.Option("--wide", help="Every column and full file names; the default fits 80 "
                                       "columns.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace existing --plot/--csv files.")] = False,
) -> None:
    """Merge bench result files (e.g. a workstation and a Pi) into one table keyed by variant, precision, device."""
    from ..runtime import plots as P
    from ..runtime import report as R

    for name, path in (("--plot", plot), ("--csv", csv_path)):
        if path is not None:
            check_can_write(path, name, force=force)
    if plot is not None:
        P.check_plot_path(plot, "--plot")
    rows = R.load_results(files)
    if plot is not None:
        P.require_matplotlib()  # before the table, not after it
    rows.sort(key=lambda r: (str(r.get("variant")), r["precision"], r["device"], r["runtime"], r["threads"]))
    groups = R.by_device(rows)  # one table per machine: a device column would not fit 80 columns
    for device, device_rows in groups.items():
        sources = ", ".join(dict.fromkeys(str(r.get("source")) for r in device_rows))
        out.print(R.table(device_rows, title=f"{device}: {len(device_rows)} results ({sources})", wide=wide))
    if len(groups) > 1:
        out.print(f"{len(rows)} results from {len(files)} file(s) on {len(groups)} devices")
    for r in R.ratio_rows(rows):
        if "int8_speedup" in r:
            out.print(f"{r['device']}: {r['variant']} x{r['threads']}: int8 {r['int8_speedup']:.2f}x faster than fp32")
    for line in R.fastest_lines(R.fastest(rows)):
        out.print(line, markup=False)
    if csv_path:
        R.write_csv(csv_path, rows, extra=("device",))
        err.print(f"wrote {csv_path}")
    if plot:
        P.plot_latency_vs_macs(rows, plot)
        err.print(f"wrote {plot}")
