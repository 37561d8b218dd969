"""``bench --grid``: export + quantize + bench every (alpha, res) of the paper's grid (needs torch).

Bundles go to ``OUT/bundles/<name>`` and are reused when complete (every file's sha256 matches its
manifest record); results are written after each row to ``OUT/grid.json`` and ``OUT/grid.csv`` (so
Ctrl-C keeps what was measured), then the plots ``OUT/latency_vs_macs.png`` and, with ``eval_dir``,
``OUT/top1_vs_latency.png``.
"""

from __future__ import annotations

from pathlib import Path

from ..core.bundle import FILE_FP32, FILE_INT8, FILE_TFLITE, FILE_TFLITE_INT8, file_mismatch
from ..core.errors import MobilenetEdgeError, UsageError
from ..core.manifest import Manifest
from ..core.variants import Variant, parse_name

#: the results ``run_grid`` writes in its ``out_dir`` (the second plot only with ``eval_dir``)
RESULT_FILES = ("grid.json", "grid.csv", "latency_vs_macs.png", "top1_vs_latency.png")


def check_results_absent(out_dir: Path, *, force: bool) -> None:
    """Refuse an ``out_dir`` that already holds grid results unless ``force`` (issue #20: the README's
    command rewrote the committed benchmarks/results). Complete bundles in ``out_dir/bundles`` are not
    results: they are reused either way.

    Raises:
        UsageError: ``"--out DIR holds results of an earlier grid (grid.json, ...); use --force to replace
            them or another --out"``.
    """
    existing = [n for n in RESULT_FILES if (Path(out_dir) / n).exists()]
    if existing and not force:
        raise UsageError(f"--out {out_dir} holds results of an earlier grid ({', '.join(existing)}); "
                         "use --force to replace them or another --out")


def bundle_complete(bundle: Path, *, int8: bool = True, tflite: bool = False) -> bool:
    """True when the manifest lists model.onnx (and model.int8.onnx; with ``tflite`` model.tflite and
    model.int8.tflite too) and every listed file's size and sha256 match."""
    try:
        manifest = Manifest.read(bundle)
    except MobilenetEdgeError:
        return False
    files = manifest.files or {}
    needed = [FILE_FP32] + ([FILE_INT8] if int8 else []) + ([FILE_TFLITE, FILE_TFLITE_INT8] if tflite else [])
    if any(n not in files for n in needed):
        return False
    return all((bundle / n).is_file() and file_mismatch(bundle / n, manifest.file(n), cached=True)[2] is None for n in files)


def find_weights(weights_dir: Path | None, alpha: float, res: int) -> tuple[Path | None, bool]:
    """Weights for (alpha, res) in ``weights_dir``: (path, exact) where exact means the same res.

    Google trained one checkpoint per (alpha, res); one of the same alpha at another res still loads
    (the weights are resolution-free) and is used when no exact file exists.
    """
    if weights_dir is None:
        return None, False
    same_alpha = None
    for p in sorted(weights_dir.iterdir()):
        if p.suffix not in (".tflite", ".safetensors"):
            continue
        parsed = parse_name(p.name)
        if parsed and abs(parsed[0] - alpha) < 1e-9:
            if parsed[1] == res:
                return p, True
            same_alpha = same_alpha or p
    return same_alpha, False


def reference_for(weights_dir: Path | None, alpha: float, res: int) -> Path | None:
    """Google's int8 reference ``.tflite`` of exactly this (alpha, res), if present."""
    if weights_dir is None:
        return None
    for p in sorted(weights_dir.glob("*_quant.tflite")):
        parsed = parse_name(p.name)
        if parsed and abs(parsed[0] - alpha) < 1e-9 and parsed[1] == res:
            return p
    return None


def run_grid(*, alphas, resolutions, threads, runs, warmup, weights_dir=None, calib=None, eval_dir=None,
             out_dir=Path("benchmarks/results"), out=None, err=None, tflite=False,
             runtimes=("onnxruntime", "litert"), force=False) -> list[dict]:
    """Export, quantize and bench the grid; returns the result rows. See module docstring.

    ``tflite``: also export model.tflite and model.int8.tflite (litert-torch, calibrated on ``calib``,
    which is then required) and bench them on LiteRT. ``out``/``err``: rich consoles for results and
    progress (default: stdout / stderr). ``runtimes``: the runtimes each bundle file is benched on
    (runtime/names.py; default ONNX Runtime and LiteRT, as before OpenVINO; add "openvino" for its rows).

    ``force``: replace the results of an earlier grid in ``out_dir`` (:data:`RESULT_FILES`).

    Raises:
        UsageError: ``out_dir`` holds results and not ``force`` (:func:`check_results_absent`), before any work.
        MobilenetEdgeError: one or more grid points failed (each named with its error; the rows of the
            others are kept in ``grid.json`` / ``grid.csv``).
    """
    check_results_absent(Path(out_dir), force=force)
    from rich.console import Console

    from ..core.platform_info import environment
    from ..core.progress import progress_bar

    # what every point needs, imported once before the loop: a missing package fails the grid, not each point
    from ..quantize import pipeline  # noqa: F401
    from ..runtime import bench, report  # noqa: F401
    from . import export  # noqa: F401

    out = out or Console(markup=False, emoji=False)
    err = err or Console(stderr=True, markup=False, emoji=False)
    out_dir = Path(out_dir)
    env = environment()
    env["grid"] = {"alphas": list(alphas), "res": list(resolutions), "weights_dir": str(weights_dir or ""),
                   "calib": str(calib or "synthetic"), "runs": runs, "warmup": warmup, "threads": list(threads)}
    rows: list[dict] = []
    failures: list[dict] = []
    variants = [Variant(a, r, 1001 if weights_dir else 1000) for a in alphas for r in resolutions]
    json_path, csv_path = out_dir / RESULT_FILES[0], out_dir / RESULT_FILES[1]
    if weights_dir is None:
        err.print("no --weights-dir: Google's pretrained weights from the registry per point (shipped, cached or "
                  "downloaded; `mobilenet-edge weights list`), random where none is reachable (marked in the rows)"
                  if calib else "no --weights-dir and no --calib: random weights and synthetic calibration (latency "
                  "only; int8 accuracy meaningless); with --calib DIR each point gets Google's pretrained weights",
                  style="yellow", markup=False)
    point = dict(weights_dir=weights_dir, calib=calib, eval_dir=eval_dir, bundles_dir=out_dir / "bundles",
                 tflite=tflite, threads=threads, runs=runs, warmup=warmup, runtimes=tuple(runtimes))
    with progress_bar(err, transient=False) as prog:
        task = prog.add_task("grid", total=len(variants))
        for v in variants:
            prog.update(task, description=f"{v.name}")
            try:
                for i, row in enumerate(_grid_point(v, **point)):
                    if row["weights_random"] and i == 0 and calib is not None:  # once per point (the header says it without --calib)
                        err.print(f"{v.name}: random weights ({row['weights_note']})", style="yellow", markup=False)
                    rows.append(row)
                    _write_rows(json_path, csv_path, env, rows)
            except KeyboardInterrupt:
                err.print(f"interrupted: {len(rows)} result{'' if len(rows) == 1 else 's'} kept in {json_path}",
                          style="yellow", markup=False)
                raise
            except Exception as e:  # noqa: BLE001 - listed; the grid goes on
                failures.append({"variant": v.name, "error": str(e)})
                err.print(f"failed {v.name}: {e}", style="red", markup=False)
            prog.advance(task)
    if rows:  # only then were grid.json / grid.csv written
        _report(rows, env, out_dir, json_path, csv_path, out=out, eval_dir=eval_dir)
    if failures:
        errors = {f["error"] for f in failures}
        if len(errors) == 1 and not rows:  # the same cause everywhere: say it once
            raise MobilenetEdgeError(f"all {len(failures)} grid points failed, nothing written: {errors.pop()}")
        raise MobilenetEdgeError(f"{len(failures)} grid point(s) failed: " + "; ".join(
            f"{f['variant']}: {f['error']}" for f in failures))
    return rows


def _grid_point(v: Variant, *, weights_dir, calib, eval_dir, bundles_dir: Path, tflite: bool, threads, runs: int,
                warmup: int, runtimes: tuple = ("onnxruntime", "litert")):
    """One (alpha, res): export and quantize its bundle unless complete, evaluate (with ``eval_dir``) and
    bench every target at every thread count; yields one result row per (target, threads) as measured."""
    from ..quantize.pipeline import quantize_bundle
    from ..runtime import bench as B
    from .export import ExportOptions, export_bundle

    weights, exact, ref, note = _point_weights(weights_dir, v, calib)
    bundle = bundles_dir / v.name
    formats = ("onnx", "tflite") if tflite else ("onnx",)
    if not bundle_complete(bundle, tflite=tflite):
        export_bundle(ExportOptions(alpha=v.alpha, res=v.res, weights=weights, out=bundles_dir, force=True,
                                    padding="tf_same" if weights is None else None,  # weights carry their own
                                    formats=formats, tflite_int8=tflite,
                                    calib=calib if tflite else None))
        quantize_bundle(bundle, calib=calib, synthetic=calib is None)
    targets = B.targets_for(bundle, formats=formats, runtimes=runtimes)
    if ref is not None:
        targets += B.targets_for(ref)
    top1 = {}
    if eval_dir is not None:
        from ..runtime.evaluate import evaluate

        for t in (targets if weights is not None else [t for t in targets if t.path == ref]):
            top1[t.path, t.runtime] = evaluate(t.path, eval_dir, runtime=t.runtime)["top1"]
    for t in targets:
        for n in threads:
            m = B.measure_in_subprocess(t, threads=n, runs=runs, warmup=warmup)
            row = B.result_row(t, m, threads=n, runs=runs)
            # random weights have no accuracy to report (the weights of the row say so)
            row["top1"] = top1.get((t.path, t.runtime)) if (weights is not None or t.path == ref) else None
            row["weights"] = None if weights is None else weights.name
            row["weights_exact_res"] = exact
            row["weights_random"] = weights is None
            row["weights_note"] = note
            yield row


def _point_weights(weights_dir, v: Variant, calib) -> tuple[Path | None, bool, Path | None, str | None]:
    """Weights of one grid point: (file or None for random, trained at this res, Google's int8 reference
    .tflite of exactly this point or None, why random weights are used or None).

    With ``weights_dir``: :func:`find_weights` / :func:`reference_for` in it. Without: the registry's
    pretrained default (:func:`~mobilenet_edge.build.weights.resolve.resolve_weights`: shipped, cached,
    same alpha at another res, download); when none is reachable, or without ``calib`` (int8 ranges of
    real weights must come from real images), the point gets random weights and the row says so
    (``weights_random``, ``weights_note``).
    """
    if weights_dir is not None:
        weights, exact = find_weights(weights_dir, v.alpha, v.res)
        note = None if weights is not None else f"no weights for alpha {v.alpha:g} in {weights_dir}"
        return weights, exact, reference_for(weights_dir, v.alpha, v.res), note
    if calib is None:
        return None, False, None, "no --calib: quantizing pretrained weights needs calibration images"
    from ..core.errors import MobilenetEdgeError as _Err
    from .weights.resolve import resolve_weights

    try:
        r = resolve_weights(None, alpha=v.alpha, res=v.res)
    except _Err as e:
        return None, False, None, str(e)
    exact = not r.other_res
    ref = r.path if exact and r.entry is not None and r.entry.source == "google-quant" else None
    return r.path, exact, ref, None


def _write_rows(json_path: Path, csv_path: Path, env: dict, rows: list[dict]) -> None:
    """grid.json and grid.csv with every row so far (written after each row: Ctrl-C keeps them)."""
    from ..runtime import report as R

    R.write_results(json_path, env, rows, fastest_rows=R.fastest(rows))
    R.write_csv(csv_path, rows, extra=("weights", "weights_exact_res", "weights_random"))


def _report(rows: list[dict], env: dict, out_dir: Path, json_path: Path, csv_path: Path, *, out, eval_dir) -> None:
    """The plots, the results table and the ratio lines, then what was written."""
    from ..runtime import plots as P
    from ..runtime import report as R

    plots = [out_dir / RESULT_FILES[2]] + ([out_dir / RESULT_FILES[3]] if eval_dir is not None else [])
    P.plot_latency_vs_macs(rows, plots[0])
    if eval_dir is not None:
        P.plot_top1_vs_latency(rows, plots[1])
    out.print(R.table(rows, title=f"grid on {R.device_name(env)}"))
    for line in R.ratio_lines(rows) + R.fastest_lines(R.fastest(rows)):
        out.print(line)
    out.print(f"wrote {json_path}, {csv_path}, " + ", ".join(p.name for p in plots))
