"""Latency benchmarks of .onnx (ONNX Runtime) and .tflite (LiteRT) files; runtime side, no torch.

Method (after ORT's perf_test and TFLite's benchmark_model): each (model, threads) runs in a fresh
worker process (so peak RSS is the model's own and a crash is contained); session / interpreter
creation and the first inference are timed apart, then ``warmup`` untimed runs, then ``runs`` timed
runs with ``time.perf_counter_ns`` on one fixed random input of the model's own dtype and shape
(batch 1). Statistics are min, p50, p90, p99, mean, std (ms, no outlier clipping), throughput
(inferences/s = 1000 / mean_ms), peak RSS (MB, ``ru_maxrss``), and achieved GMAC/s
(MACs / p50 time) where the variant's MACs are known.

A row's ``runtime`` is :data:`~.names.RUNTIME_ORT` ("onnxruntime") for ``.onnx`` files and
:data:`~.names.RUNTIME_LITERT` ("litert") for ``.tflite`` files, whichever TFLite interpreter ran them
(LiteRT or tflite-runtime: ``runtime_version`` names it, e.g. "ai-edge-litert 2.3.0"); see :mod:`.names`.
``.onnx`` files also run on :data:`~.names.RUNTIME_OPENVINO` ("openvino") when it is installed: a bundle
is benched on every (file, runtime) pair that can run here (:func:`targets_for`). OpenVINO rows carry
``execution`` (``{"inference_precision": "f32", "threads", "compute_precisions"}``: what ran, as the
compiled model reports it); OpenVINO compiles with the batch fixed to 1 (bench's batch) and the f32
precision hint (:mod:`mobilenet_edge.core.openvino_session`).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ..core.bundle import (
    FILE_FP32,
    FILE_INT8,
    FILE_TFLITE,
    FILE_TFLITE_INT8,
    check_bundle_file,
    check_listed_file,
)
from ..core.errors import MobilenetEdgeError, UsageError
from ..core.manifest import Manifest
from ..core.openvino_session import openvino_available
from ..core.precision import file_precision
from ..core.sessions import ort_session
from ..core.variants import Variant, parse_name
from .names import RUNTIME_LITERT, RUNTIME_OPENVINO, RUNTIME_ORT, RUNTIMES_FOR_SUFFIX

#: Columns of a result row (JSON keys and CSV header, in order); issue #7.
COLUMNS = (
    "model", "variant", "alpha", "res", "precision", "runtime", "threads", "runs", "init_ms", "first_ms",
    "min_ms", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms", "throughput_ips", "peak_rss_mb", "size_mb",
    "params", "macs", "gmacs_per_s", "top1",
)


@dataclass(frozen=True)
class Target:
    """One model file to bench, with what is known about it."""

    path: Path
    precision: str  # fp32 | int8
    runtime: str  # RUNTIME_ORT ("onnxruntime") | RUNTIME_OPENVINO ("openvino") | RUNTIME_LITERT ("litert")
    variant: str | None = None
    alpha: float | None = None
    res: int | None = None
    num_classes: int | None = None
    params: int | None = None
    macs: int | None = None
    label: str | None = None  # display name, e.g. bundle name or file name

    def describe(self) -> dict:
        return {
            "model": self.label or self.path.name, "variant": self.variant, "alpha": self.alpha, "res": self.res,
            "precision": self.precision, "runtime": self.runtime, "params": self.params, "macs": self.macs,
            "size_mb": round(self.path.stat().st_size / 1e6, 3),
        }


def _runtime_for(path: Path) -> str:
    """The bench row ``runtime`` of a model file (see :mod:`.names`)."""
    if path.suffix == ".onnx":
        return RUNTIME_ORT
    if path.suffix == ".tflite":
        return RUNTIME_LITERT
    raise UsageError(f"{path}: not a .onnx or .tflite file or a bundle folder")


def _onnx_variant(path: Path) -> tuple[float | None, int | None, int | None]:
    """(alpha, res, num_classes) from our exports' ONNX ``metadata_props`` (docs/bundle-format.md);
    (None, None, None) when absent or unreadable (a foreign file: no analytic counts)."""
    try:
        import onnx

        meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
        if meta.get("producer") != "mobilenet-edge":
            return None, None, None
        alpha, res = float(meta["alpha"]), int(meta["res"])
        classes = int(meta["num_classes"]) if "num_classes" in meta else None
    except Exception:  # noqa: BLE001 - no metadata: no counts; an unreadable file fails in its worker
        return None, None, None
    return alpha, res, classes


def available_runtimes() -> tuple[str, ...]:
    """The runtimes that can run here: ONNX Runtime and LiteRT always (a missing TFLite interpreter fails
    in its worker, with the pip command), OpenVINO when installed."""
    return tuple(r for r in (RUNTIME_ORT, RUNTIME_OPENVINO, RUNTIME_LITERT)
                 if r != RUNTIME_OPENVINO or openvino_available())


def runtimes_for(path: Path, runtimes: Iterable[str] | None, *, every: bool) -> list[str]:
    """The runtimes to bench ``path`` on: those of ``runtimes`` that can run its suffix; with
    ``runtimes`` None, every available one (``every``: a bundle) or the suffix's default (a lone file)."""
    can = RUNTIMES_FOR_SUFFIX.get(path.suffix, ())
    if runtimes is None:
        return [r for r in can if r in available_runtimes()] if every else list(can[:1])
    return [r for r in can if r in runtimes]


def targets_for(spec: str | Path, *, formats: Iterable[str] = ("onnx", "tflite"),
                runtimes: Iterable[str] | None = None, verify: bool = True) -> list[Target]:
    """Expand a bundle folder or a single .onnx/.tflite file into (file, runtime) targets.

    A bundle gives every (model file, runtime) pair that can run here (``.onnx``: ONNX Runtime, then
    OpenVINO when installed; ``.tflite``: LiteRT); a lone file its default runtime (ONNX Runtime or
    LiteRT). ``runtimes`` (names of :mod:`.names`) replaces both: the pairs whose runtime is listed.
    ``verify``: a bundle's files are checked against its manifest first (``--no-verify``: False).

    Raises:
        UsageError: the path does not exist or is not a model file / bundle; a lone file that none of
            ``runtimes`` can run.
        MobilenetEdgeError: (``verify``) a bundle file whose size or sha256 differs from its manifest.
    """
    path = Path(spec)
    runtimes = tuple(runtimes) if runtimes is not None else None
    if path.is_dir():
        return _bundle_targets(path, formats, runtimes, verify=verify)
    if not path.is_file():
        raise UsageError(f"no such model file or bundle: {path}")
    if verify:
        check_listed_file(path)  # e.g. bundle/model.int8.onnx given by its path
    target = _file_target(path)
    rts = runtimes_for(path, runtimes, every=False)
    if not rts:
        raise UsageError(f"{path.name}: none of the runtimes {', '.join(runtimes or ())} runs a {path.suffix} file")
    return [replace(target, runtime=r) for r in rts]


def _bundle_targets(path: Path, formats: Iterable[str], runtimes: tuple[str, ...] | None = None, *,
                    verify: bool = True) -> list[Target]:
    """Every model file of a bundle, with the manifest's variant (name, alpha, res, classes, params, MACs);
    with ``verify`` each one checked against the manifest (:func:`~mobilenet_edge.core.bundle.check_bundle_file`)."""
    manifest = Manifest.read(path)  # not a bundle: the one wording and exit code (2) of every command
    v = manifest.variant or {}
    out = []
    for fname, precision in ((FILE_FP32, "fp32"), (FILE_INT8, "int8"), (FILE_TFLITE, "fp32"),
                             (FILE_TFLITE_INT8, "int8")):
        f = path / fname
        if f.is_file() and f.suffix.lstrip(".") in formats:
            if verify:
                check_bundle_file(path, fname, manifest)
            out += [Target(
                f, precision, r, manifest.name, v.get("alpha"), v.get("res"),
                v.get("num_classes"), v.get("params"), v.get("macs"), f"{manifest.name}/{fname}",
            ) for r in runtimes_for(f, runtimes, every=True)]
    if not out:
        raise UsageError(f"{path}: bundle holds no model file" + (" that these runtimes run" if runtimes else ""))
    return out


def _file_target(path: Path) -> Target:
    """A lone model file: variant from our ONNX metadata, else from a Google-style file name
    (``mobilenet_v1_0.5_160_quant.tflite``: 1001 classes), else unknown (no counts)."""
    runtime = _runtime_for(path)
    parsed = parse_name(path.name)
    alpha = res = params = macs = classes = name = None
    if parsed:
        alpha, res = parsed
        classes = 1001 if path.suffix == ".tflite" else None  # Google's TF-slim files have 1001 classes
    if path.suffix == ".onnx":  # a lone file of our export (e.g. bundle/model.int8.onnx): its metadata wins
        meta_alpha, meta_res, meta_classes = _onnx_variant(path)
        if meta_alpha is not None:
            alpha, res, classes = meta_alpha, meta_res, meta_classes
    if alpha is not None and res is not None:
        try:
            v = Variant(alpha, res, classes or 1000)
        except ValueError:  # metadata outside the model family (e.g. res < 32): no counts, still benched
            alpha = res = classes = None
        else:
            name, params, macs = v.name, v.params, v.macs
    return Target(path, file_precision(path), runtime, name, alpha, res, classes, params, macs, path.name)


def stats_ms(times_ns: Iterable[int]) -> dict:
    """min/p50/p90/p99/mean/std in ms of a list of ns durations (linear-interpolated percentiles)."""
    t = np.asarray(list(times_ns), dtype=np.float64) / 1e6
    if t.size == 0:
        raise ValueError("no timings")
    p50, p90, p99 = np.percentile(t, [50, 90, 99])
    return {
        "min_ms": float(t.min()), "p50_ms": float(p50), "p90_ms": float(p90), "p99_ms": float(p99),
        "mean_ms": float(t.mean()), "std_ms": float(t.std(ddof=1)) if t.size > 1 else 0.0,
    }


def _peak_rss_mb() -> float:
    """Peak resident memory of this process in MB.

    Linux: ``VmHWM`` from /proc/self/status, the high-water mark of this address space. Not
    ``ru_maxrss``: Linux carries that across execve, so a worker started from a parent holding torch
    would report the parent's peak.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource

    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux, bytes on macOS
    return kb / 1024.0 if sys.platform != "darwin" else kb / 1024.0 / 1024.0


def _make_session(path: Path, runtime: str, threads: int):
    """(run() callable on a fixed input, runtime version, execution facts or None). Creation is what
    init_ms measures."""
    rng = np.random.default_rng(0)
    if runtime == RUNTIME_OPENVINO:
        import openvino as ov

        from .openvino_backend import open_openvino

        m = open_openvino(path, threads=threads, batch=1)
        x = _random_input(rng, [d or 1 for d in m.in_shape], m.input_dtype)
        req = m.compiled.create_infer_request()
        req.set_input_tensor(0, ov.Tensor(x))  # set once, as ORT's feed and TFLite's set_tensor are fixed
        return req.infer, m.version, m.execution
    if runtime == RUNTIME_ORT:
        import onnxruntime as ort

        sess = ort_session(path, threads=threads, sequential=True)
        inp = sess.get_inputs()[0]
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in inp.shape]
        dtype = {"tensor(float)": np.float32, "tensor(uint8)": np.uint8, "tensor(int8)": np.int8}[inp.type]
        x = _random_input(rng, shape, dtype)
        feed = {inp.name: x}
        return (lambda: sess.run(None, feed)), ort.__version__, None
    from .tflite_backend import make_interpreter

    it, name, version = make_interpreter(path, threads=threads, probe=False)
    version = f"{name} {version}"
    d = it.get_input_details()[0]
    x = _random_input(rng, list(d["shape"]), d["dtype"])
    idx = d["index"]

    def run():
        it.set_tensor(idx, x)
        it.invoke()

    return run, version, None


def _random_input(rng, shape, dtype):
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)
    return rng.uniform(-1, 1, size=shape).astype(dtype)


def measure(path: Path, runtime: str, *, threads: int = 1, runs: int = 100, warmup: int = 10) -> dict:
    """Time one model in this process. Returns init_ms, first_ms, the stats, peak_rss_mb, runtime_version
    (and ``execution`` for OpenVINO)."""
    t0 = time.perf_counter_ns()
    run, version, execution = _make_session(Path(path), runtime, threads)
    t1 = time.perf_counter_ns()
    run()
    t2 = time.perf_counter_ns()
    for _ in range(warmup):
        run()
    times = []
    for _ in range(runs):
        a = time.perf_counter_ns()
        run()
        times.append(time.perf_counter_ns() - a)
    return {
        "init_ms": (t1 - t0) / 1e6, "first_ms": (t2 - t1) / 1e6, **stats_ms(times),
        "peak_rss_mb": _peak_rss_mb(), "runtime_version": version,
        **({"execution": execution} if execution is not None else {}),
    }


def measure_in_subprocess(target: Target, *, threads: int, runs: int, warmup: int, timeout: float = 900) -> dict:
    """Run :func:`measure` in a fresh interpreter (``python -m mobilenet_edge.runtime.bench``).

    Raises:
        MobilenetEdgeError: the worker failed (message carries its last stderr line).
    """
    cmd = [sys.executable, "-m", "mobilenet_edge.runtime.bench", str(target.path), target.runtime, str(threads), str(runs),
           str(warmup)]
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(threads))
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if p.returncode != 0:
        lines = [ln for ln in p.stderr.strip().splitlines() if ln.strip()]
        raise MobilenetEdgeError(f"{target.path}: {lines[-1] if lines else f'worker exited {p.returncode}'}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def result_row(target: Target, m: dict, *, threads: int, runs: int) -> dict:
    """A result row with the issue's columns (numbers as numbers)."""
    row = {**target.describe(), "threads": threads, "runs": runs}
    row.update({k: m[k] for k in ("init_ms", "first_ms", "min_ms", "p50_ms", "p90_ms", "p99_ms", "mean_ms",
                                  "std_ms", "peak_rss_mb")})
    row["throughput_ips"] = 1000.0 / m["mean_ms"] if m["mean_ms"] > 0 else math.inf
    row["gmacs_per_s"] = (target.macs / (m["p50_ms"] / 1e3) / 1e9) if target.macs else None
    row["runtime_version"] = m.get("runtime_version")
    row["top1"] = None
    row["timestamp"] = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    extra = {"execution": m["execution"]} if m.get("execution") is not None else {}
    return {k: row.get(k) for k in COLUMNS} | {"runtime_version": row["runtime_version"],
                                                "timestamp": row["timestamp"]} | extra


def bench_targets(targets: Iterable[Target], threads: Iterable[int], *, runs: int = 100, warmup: int = 10,
                  top1: dict | None = None, on_start=None, on_done=None) -> tuple[list[dict], list[dict]]:
    """Bench every (target, thread count) in a worker process (:func:`measure_in_subprocess`), targets outer.

    The one loop behind ``bench`` and ``mobilenet_edge.bench``: a job that fails is listed and the others
    still run.

    Args:
        targets: from :func:`targets_for`.
        threads: thread counts (>= 1).
        top1: ``{(path, runtime): top-1 fraction}`` filled into the rows' ``top1``.
        on_start: ``on_start(target, threads)`` before each job (progress text).
        on_done: ``on_done(rows, failures)`` after each job (rows and failures so far: incremental files).
    Returns:
        (rows (:func:`result_row`, the :data:`COLUMNS` plus ``runtime_version``, ``timestamp``),
        failures (``[{"model", "threads", "error"}]``)).
    """
    rows: list[dict] = []
    failures: list[dict] = []
    for t in targets:
        for n in threads:
            if on_start is not None:
                on_start(t, n)
            try:
                m = measure_in_subprocess(t, threads=n, runs=runs, warmup=warmup)
            except Exception as e:  # noqa: BLE001 - listed, the others still run
                failures.append({"model": t.label, "threads": n, "error": str(e)})
            else:
                row = result_row(t, m, threads=n, runs=runs)
                if top1 and (t.path, t.runtime) in top1:
                    row["top1"] = top1[t.path, t.runtime]
                rows.append(row)
            if on_done is not None:
                on_done(rows, failures)
    return rows, failures


def _worker(argv: list[str]) -> int:
    path, runtime, threads, runs, warmup = argv
    try:
        m = measure(Path(path), runtime, threads=int(threads), runs=int(runs), warmup=int(warmup))
    except Exception as e:  # noqa: BLE001 - reported to the parent as one line
        print(f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}", file=sys.stderr)
        return 1
    print(json.dumps(m))
    return 0


if __name__ == "__main__":
    sys.exit(_worker(sys.argv[1:]))
