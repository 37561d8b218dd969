"""``bench``: latency of bundles and model files, the rows of ``mobilenet-edge bench --json``. No torch.

The measurement is :mod:`mobilenet_edge.runtime.bench` (one worker process per (file, runtime, threads);
session creation and first inference apart; then warm-up and timed runs with ``perf_counter_ns``)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

from ..core.errors import MobilenetEdgeError, UsageError
from .bundle import ModelLike


@dataclass
class BenchResult:
    """What :func:`bench` measured: the document ``mobilenet-edge bench --json`` writes.

    Attributes:
        environment: CPU model, ISA flags, arch, OS, Python and runtime versions
            (:func:`mobilenet_edge.core.platform_info.environment`).
        rows: one dict per (file, runtime, threads) with the keys of ``bench --json``'s ``results``
            (:data:`mobilenet_edge.runtime.bench.COLUMNS`: model, variant, alpha, res, precision, runtime,
            threads, runs, init_ms, first_ms, min/p50/p90/p99/mean/std_ms, throughput_ips, peak_rss_mb,
            size_mb, params, macs, gmacs_per_s, top1; plus runtime_version, timestamp). Times in ms,
            sizes in MB, numbers as numbers.
        failures: ``[{"model", "threads", "error"}]`` for jobs that did not run (``strict=False`` only).
        fastest: the fastest (file, runtime) per model and thread count with its ratio to the runner-up
            (:func:`mobilenet_edge.runtime.report.fastest`).
    """

    environment: dict
    rows: list[dict]
    failures: list[dict] = field(default_factory=list)
    fastest: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        """``{"environment", "results", "failures", "fastest"}``: the ``bench --json`` document."""
        return {"environment": self.environment, "results": self.rows, "failures": self.failures,
                "fastest": self.fastest}

    def save(self, path: str | os.PathLike) -> Path:
        """Write :meth:`to_dict` as strict JSON (atomically), readable by ``mobilenet-edge report``."""
        from ..runtime.report import write_results

        write_results(path, self.environment, self.rows, self.failures, fastest_rows=self.fastest)
        return Path(path)


def bench(
    models: Union[ModelLike, Iterable[ModelLike]],
    *,
    threads: Union[int, Iterable[int]] = 1,
    runs: int = 100,
    warmup: int = 10,
    runtimes: Optional[Iterable[str]] = None,
    strict: bool = True,
) -> BenchResult:
    """Latency of each model file of ``models`` on each runtime that runs it here, at each thread count.

    Args:
        models: one or several :class:`~.bundle.Bundle` / bundle folders (every model file in them) or
            ``.onnx`` / ``.tflite`` files.
        threads: thread count(s), each >= 1.
        runs: timed runs per job (>= 1); warmup: untimed runs before them (>= 0).
        runtimes: e.g. ``["ort", "openvino"]`` (default: every runtime installed that runs the file).
        strict: raise when a job fails (after all jobs ran); False lists it in ``failures`` instead.
    Returns:
        :class:`BenchResult` (``.rows``: the rows of ``bench --json``).
    Raises:
        UsageError: a missing path, a bad number, an unknown runtime.
        MobilenetEdgeError: ``strict`` and a job failed (each failure named), or OpenVINO asked for and
            not installed.
    """
    from ..core.platform_info import environment
    from ..runtime import bench as B
    from ..runtime.names import runtime_name
    from ..runtime.report import fastest

    items = [models] if isinstance(models, (str, os.PathLike)) else list(models)
    thread_list = [threads] if isinstance(threads, int) else list(threads)
    if not items:
        raise UsageError("bench needs at least one bundle or model file")
    for name, value, low in (("threads", thread_list, 1), ("runs", [runs], 1), ("warmup", [warmup], 0)):
        if not value or any(isinstance(v, bool) or not isinstance(v, int) or v < low for v in value):
            raise UsageError(f"{name} must be integers >= {low}, got {value if name == 'threads' else value[0]!r}")
    try:
        names = None if runtimes is None else [runtime_name(r) for r in runtimes]
    except ValueError as e:
        raise UsageError(str(e)) from None
    targets = [t for m in items for t in B.targets_for(Path(m), runtimes=names)]
    rows, failures = B.bench_targets(targets, list(dict.fromkeys(thread_list)), runs=runs, warmup=warmup)
    if strict and failures:
        raise MobilenetEdgeError(f"{len(failures)} of {len(failures) + len(rows)} bench jobs failed: "
                                 + "; ".join(f"{f['model']} x{f['threads']}: {f['error']}" for f in failures))
    return BenchResult(environment(), rows, failures, fastest(rows))
