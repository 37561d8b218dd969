"""Bench results: JSON/CSV files, merging across machines, rich tables (no torch; plots: :mod:`.plots`).

A result file is ``{"environment": {...}, "results": [row, ...]}`` with rows keyed by
:data:`mobilenet_edge.runtime.bench.COLUMNS`. Merged rows carry a ``device`` key (CPU model + arch, marked
"(emulated)" for qemu runs) so that one table compares an x86 box and a Pi.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from pathlib import Path

from ..core.bundle import atomic_path, write_json_atomic
from ..core.errors import UsageError
from .bench import COLUMNS
from .names import RUNTIME_LITERT, RUNTIME_ORT


def write_results(path: str | Path, environment: dict, rows: list[dict], failures: list[dict] | None = None,
                  *, fastest_rows: list[dict] | None = None) -> None:
    """Write (atomically) the JSON result file ``{"environment", "results"}``, plus ``"failures"``
    (``[{"model", "threads", "error"}]``, models that did not load or run) and ``"fastest"``
    (:func:`fastest`) when given."""
    doc = {"environment": environment, "results": rows}
    if failures is not None:
        doc["failures"] = failures
    if fastest_rows is not None:
        doc["fastest"] = fastest_rows
    write_json_atomic(path, doc)


def write_csv(path: str | Path, rows: list[dict], *, extra: Iterable[str] = ()) -> None:
    """CSV with the columns of :data:`COLUMNS` (plus ``extra``), one row per result; atomic."""
    cols = list(COLUMNS) + [c for c in extra if c not in COLUMNS]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in cols})
    with atomic_path(path) as tmp:
        tmp.write_text(buf.getvalue(), encoding="utf-8")


def device_name(env: dict, host: str | None = None) -> str:
    """Short device label: CPU model (arch), '(emulated)' when the run was under qemu. With ``host`` (a
    ``bench --on`` result) it is ``"HOST: board, CPU (arch)"``: two boards with the same CPU stay apart."""
    cpu = env.get("cpu_model") or env.get("cpu") or "unknown CPU"
    arch = env.get("arch") or env.get("machine") or "?"
    label = f"{cpu} ({arch})"
    if host is not None:
        board = env.get("device")
        label = f"{host}: {board + ', ' if board and board != cpu else ''}{label}"
    return label + " (emulated)" if env.get("emulated") else label


def fleet_document(docs: list[dict], failures: list[dict]) -> dict:
    """The merged result file of ``bench --on`` (what ``report`` reads):
    ``{"hosts": [{"host", "environment", "results", "failures"}], "failures": [{"host", "error"}]}``, one
    entry per host that answered (``docs``: bench documents with ``"host"``) and one failure per host that did not."""
    return {"hosts": [{"host": d["host"], "environment": d["environment"], "results": d["results"],
                       "failures": d.get("failures") or []} for d in docs], "failures": failures}


def document_rows(data, source: str = "") -> list[dict]:
    """Rows of one result document, each with ``device`` and ``source``: a bench file
    ``{"environment", "results"}`` or a ``bench --on`` file (:func:`fleet_document`; ``device`` names the host).

    Raises:
        UsageError: neither shape, or a result without model / precision / runtime / threads / p50_ms.
    """
    if isinstance(data, dict) and isinstance(data.get("hosts"), list):
        rows = []
        for h in data["hosts"]:
            if not isinstance(h, dict) or not isinstance(h.get("host"), str):
                raise UsageError(f"{source}: a hosts entry without a host name")
            rows += _rows(h, source, device_name(h.get("environment") or {}, host=h["host"]))
        return rows
    return _rows(data, source, None)


def _rows(data, source: str, device: str | None) -> list[dict]:
    if not (isinstance(data, dict) and isinstance(data.get("environment"), dict)
            and isinstance(data.get("results"), list)):
        raise UsageError(f'{source} is not a bench result file (expected {{"environment": {{...}}, "results": [...]}})')
    device = device or device_name(data["environment"])
    rows = []
    for i, r in enumerate(data["results"]):
        if not isinstance(r, dict):
            raise UsageError(f"{source}: result {i} is not an object (got {type(r).__name__})")
        missing = [k for k in ("model", "precision", "runtime", "threads", "p50_ms") if k not in r]
        if missing:
            raise UsageError(f"{source}: result {i} lacks {', '.join(missing)}")
        rows.append({**r, "device": device, "source": source})
    return rows


def device_table(rows: list[dict], *, title: str = "", value: str = "p50_ms"):
    """A rich Table with one row per (model, precision, runtime, threads) and one column per device
    (``value``, default p50 latency in ms; "-" where a device has no result). A column is headed by the
    device's host (``bench --on``: "HOST: board, CPU (arch)") and the caption spells each device out, so
    that a few devices fit 80 columns."""
    from ..core.tables import add_columns, compact_table

    devices = list(dict.fromkeys(r["device"] for r in rows))
    heads = [d.split(": ", 1)[0] for d in devices]
    if len(set(heads)) < len(heads):  # two devices with one host name: full names
        heads = list(devices)
    keyed: dict[tuple, dict] = {}
    for r in rows:
        keyed.setdefault((display_model(r), r["precision"], r["runtime"], r["threads"]), {})[r["device"]] = r.get(value)
    legend = "; ".join(d for h, d in zip(heads, devices) if h != d)
    t = compact_table(title, caption=f"{value.replace('_ms', ' ms')}: {legend}" if legend else None)
    add_columns(t, ["model", "prec", "runtime", "thr", *heads], left=("model", "prec", "runtime"), fold=("model",))
    for key, per_device in keyed.items():
        t.add_row(*map(str, key), *[_fmt(value, per_device.get(d)) for d in devices])
    return t


def load_results(paths: Iterable[str | Path]) -> list[dict]:
    """Read result files and return all rows, each with ``device`` and ``source`` added.

    Raises:
        UsageError: a file that is missing, not JSON, or not of the ``{"environment", "results"}`` shape.
    """
    rows: list[dict] = []
    seen: set[Path] = set()
    for p in map(Path, paths):
        if p.resolve() in seen:  # the same file twice would double its rows
            continue
        seen.add(p.resolve())
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise UsageError(f"no such result file: {p}") from None
        except (OSError, ValueError) as e:
            raise UsageError(f"{p} is not a JSON result file: {e}") from None
        rows += document_rows(data, str(p))
    return rows


#: bench/report table columns (row key, header): the default set fits 80 columns, ``wide`` adds the rest
NARROW_COLUMNS = (("model", "model"), ("precision", "prec"), ("runtime", "runtime"), ("threads", "thr"),
                  ("p50_ms", "p50"), ("p99_ms", "p99"))
WIDE_COLUMNS = (("model", "model"), ("precision", "prec"), ("runtime", "runtime"), ("threads", "thr"),
                ("init_ms", "init ms"), ("first_ms", "first ms"), ("p50_ms", "p50 ms"), ("p90_ms", "p90 ms"),
                ("p99_ms", "p99 ms"), ("std_ms", "std"), ("throughput_ips", "inf/s"), ("gmacs_per_s", "GMAC/s"),
                ("peak_rss_mb", "RSS MB"), ("size_mb", "MB"))
#: the caption of a default table: what --wide adds
WIDE_HINT = "latency in ms; --wide adds init, first run, p90, std, inf/s, RSS, MB, file names"


def table(rows: list[dict], *, title: str = "", wide: bool = False):
    """A rich Table of result rows, one per (model, precision, runtime, threads).

    The default columns (:data:`NARROW_COLUMNS`: p50/p99 latency in ms, top-1 when present) fit an
    80-column terminal: a bundle's file shows as the bundle name (its precision and runtime name the
    file: ``.onnx`` on onnxruntime/openvino, ``.tflite`` on litert). ``wide``: every column of
    :data:`WIDE_COLUMNS` and full file names. Rows of several machines: one table each (:func:`by_device`).
    """
    from ..core.tables import add_columns, compact_table

    t = compact_table(title, caption=None if wide else WIDE_HINT)
    cols = list(WIDE_COLUMNS if wide else NARROW_COLUMNS)
    if any(r.get("top1") is not None for r in rows):
        cols.append(("top1", "top-1"))
    add_columns(t, [h for _, h in cols], left=("model", "prec", "runtime"), fold=("model",))
    for r in rows:
        t.add_row(*[(r.get(k) if wide else display_model(r)) if k == "model" else _fmt(k, r.get(k)) for k, _ in cols])
    return t


def display_model(row: dict) -> str:
    """A row's model for a default table: ``"<bundle>/model.int8.onnx"`` -> ``"<bundle>"`` (a bundle's file
    is named by the row's precision and runtime); other labels unchanged."""
    from ..core.bundle import FILE_FP32, FILE_INT8, FILE_TFLITE, FILE_TFLITE_INT8

    model = str(row.get("model", ""))
    head, sep, tail = model.rpartition("/")
    return head if sep and head and tail in (FILE_FP32, FILE_INT8, FILE_TFLITE, FILE_TFLITE_INT8) else model


def by_device(rows: list[dict]) -> dict[str, list[dict]]:
    """Rows grouped by their ``device`` (in first-seen order): one table per machine fits 80 columns."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(str(r.get("device") or "unknown device"), []).append(r)
    return groups


def _fmt(key: str, v) -> str:
    if v is None:
        return "-"
    if key == "top1":
        return f"{100 * v:.1f}%"
    if isinstance(v, float):
        return f"{v:.2f}" if abs(v) < 1000 else f"{v:,.0f}"
    return str(v)


def ratio_rows(rows: list[dict]) -> list[dict]:
    """Per (device, variant, threads): int8/fp32 speed-up on ORT, ours(int8 .tflite LiteRT)/ours(int8 ORT)
    and ours(int8 ORT)/reference(.tflite LiteRT) latency ratios, from p50 of the same run."""
    out = []
    keyed: dict[tuple, dict] = {}
    for r in rows:
        if r.get("variant") is None:
            continue
        keyed.setdefault((r.get("device"), r["variant"], r["threads"]), {})[(r["precision"], r["runtime"],
                                                                            is_reference(r))] = r
    for (device, variant, threads), d in sorted(keyed.items(), key=lambda kv: str(kv[0])):
        fp32 = d.get(("fp32", RUNTIME_ORT, False))
        int8 = d.get(("int8", RUNTIME_ORT, False))
        ref = d.get(("int8", RUNTIME_LITERT, True))
        tfl8 = d.get(("int8", RUNTIME_LITERT, False))
        row = {"device": device, "variant": variant, "threads": threads}
        if fp32 and int8:
            row["int8_speedup"] = fp32["p50_ms"] / int8["p50_ms"]
        if int8 and tfl8:
            row["litert_over_ort"] = tfl8["p50_ms"] / int8["p50_ms"]
        if int8 and ref:
            row["ours_over_reference"] = int8["p50_ms"] / ref["p50_ms"]
            row["top1_ours"], row["top1_reference"] = int8.get("top1"), ref.get("top1")
        if len(row) > 3:
            out.append(row)
    return out


def ratio_lines(rows: list[dict]) -> list[str]:
    """One line per (device, variant, threads) with the ratios of :func:`ratio_rows`."""
    lines = []
    for r in ratio_rows(rows):
        parts = []
        if "int8_speedup" in r:
            x = r["int8_speedup"]
            parts.append(f"int8 is {x:.2f}x faster than fp32 (ORT)" if x >= 1 else
                         f"int8 is {1 / x:.2f}x SLOWER than fp32 (ORT)")
        if "litert_over_ort" in r:
            parts.append(f"ours int8 LiteRT / ours int8 ORT latency = {r['litert_over_ort']:.2f}")
        if "ours_over_reference" in r:
            parts.append(f"ours int8 ORT / Google int8 LiteRT latency = {r['ours_over_reference']:.2f}")
        lines.append(f"{r['variant']} x{r['threads']}: " + "; ".join(parts))
    return lines


def fastest(rows: list[dict]) -> list[dict]:
    """The fastest (file, runtime) per (device, model, threads), by p50, among two or more candidates.

    A model is the row's ``variant`` (a bundle's files share it), else its file; Google's reference
    ``*_quant.tflite`` files are anchors, not candidates. Returns one dict per group, in (device, variant,
    threads) order: ``{"device"`` (only when the rows have one), ``"variant", "threads", "model", "runtime",
    "precision", "p50_ms", "runner_up": {"model", "runtime", "precision", "p50_ms"}, "ratio"`` (runner-up
    p50 / fastest p50, >= 1)``}``.
    """
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if not is_reference(r) and r.get("p50_ms") is not None:
            key = (str(r.get("device", "")), str(r.get("variant") or r["model"]), int(r["threads"]))
            groups.setdefault(key, []).append(r)
    out = []
    for (device, variant, threads), rs in sorted(groups.items()):
        if len(rs) < 2:
            continue
        best, second = sorted(rs, key=lambda r: r["p50_ms"])[:2]
        pick = ("model", "runtime", "precision", "p50_ms")
        out.append({**({"device": device} if device else {}), "variant": variant, "threads": threads,
                    **{k: best[k] for k in pick}, "runner_up": {k: second[k] for k in pick},
                    "ratio": second["p50_ms"] / best["p50_ms"] if best["p50_ms"] > 0 else None})
    return out


def fastest_lines(fast: list[dict]) -> list[str]:
    """One line per :func:`fastest` entry: the winner, its p50 and its ratio to the runner-up."""
    lines = []
    for f in fast:
        u = f["runner_up"]
        ratio = f"{f['ratio']:.2f}x" if f["ratio"] is not None else "?x"
        where = f"{f['device']}: " if f.get("device") else ""
        lines.append(f"{where}fastest {f['variant']} x{f['threads']}: {f['model']} on {f['runtime']} "
                     f"{f['p50_ms']:.3f} ms, {ratio} faster than {u['model']} on {u['runtime']} ({u['p50_ms']:.3f} ms)")
    return lines


def is_reference(r: dict) -> bool:
    """A row of one of Google's reference ``*_quant.tflite`` files (an anchor in tables and plots)."""
    return str(r.get("model", "")).endswith("_quant.tflite")
