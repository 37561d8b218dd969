"""Plots of bench rows (matplotlib, Agg backend; no torch): latency vs MACs and top-1 vs latency.

Each plot is a figure builder (``*_figure``: returns the ``matplotlib.figure.Figure``, which tests read)
and a writer (``plot_*``: builds, saves atomically, closes). Conventions shared by both:

* Log axes show plain numbers (``20``, ``0.5``), not matplotlib's default ``2x10^1``.
* Point labels (``160``, ``0.5/160``) are placed by :func:`label_points`: each at the first of a few
  offsets around its point where it overlaps no label placed before and no marker.
* The title names the runtimes whose points are drawn (:data:`RUNTIME_TITLES`), not a fixed one.
"""

from __future__ import annotations

from pathlib import Path

from ..core.bundle import atomic_path
from ..core.errors import MobilenetEdgeError, UsageError
from .names import RUNTIME_LITERT, RUNTIME_OPENVINO, RUNTIME_ORT
from .report import is_reference

#: plot file suffixes (matplotlib's Agg backend writes these formats; the suffix picks the format)
PLOT_SUFFIXES = (".png", ".pdf", ".svg")
#: how a title names a runtime of :mod:`.names`
RUNTIME_TITLES = {RUNTIME_ORT: "ONNX Runtime", RUNTIME_OPENVINO: "OpenVINO", RUNTIME_LITERT: "LiteRT"}
#: label offsets tried in turn (points from the marker; a negative x puts the label on the left)
LABEL_OFFSETS = ((4, 2), (4, -9), (-4, 2), (-4, -9), (4, 9), (-4, 9), (4, -16), (-4, -16), (0, 14), (0, -22))
#: half-size (pixels) of the box a marker occupies, which labels avoid
MARKER_PX = 4


def runtimes_title(rows: list[dict]) -> str:
    """``"ONNX Runtime, LiteRT"``: the runtimes of ``rows``, in :data:`RUNTIME_TITLES` order."""
    found = {r.get("runtime") for r in rows}
    names = [t for k, t in RUNTIME_TITLES.items() if k in found]
    names += sorted(str(k) for k in found - set(RUNTIME_TITLES) if k)
    return ", ".join(names)


def latency_vs_macs_figure(rows: list[dict], *, title: str = ""):
    """p50 latency (ms) vs MMACs, log-log: one line per (alpha, precision[, threads][, device]) of our models
    on ONNX Runtime, points labelled by res; Google's reference files as black triangles (LiteRT)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=120)
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if r.get("macs") and r.get("alpha") is not None and r.get("runtime") == RUNTIME_ORT and not is_reference(r):
            groups.setdefault((r["alpha"], r["precision"], r.get("device", ""), r.get("threads", 1)), []).append(r)
    multi_threads = len({k[3] for k in groups}) > 1
    labels = []
    for (alpha, precision, device, threads), rs in sorted(groups.items(),
                                                           key=lambda kv: (str(kv[0][2]), kv[0][3], -kv[0][0], kv[0][1])):
        rs = sorted(rs, key=lambda r: r["macs"])
        label = (f"alpha {alpha:g} {precision}" + (f" x{threads}" if multi_threads else "")
                 + (f" [{device}]" if len({k[2] for k in groups}) > 1 else ""))
        ax.plot([r["macs"] / 1e6 for r in rs], [r["p50_ms"] for r in rs], "-o" if precision == "fp32" else "--s",
                label=label, markersize=4)
        labels += [(r["macs"] / 1e6, r["p50_ms"], str(r["res"])) for r in rs]
    refs = [r for r in rows if is_reference(r) and r.get("macs")]
    if refs:
        ax.plot([r["macs"] / 1e6 for r in refs], [r["p50_ms"] for r in refs], "k^", label="Google int8 .tflite (LiteRT)")
    drawn = [r for rs in groups.values() for r in rs] + refs
    ax.set_xscale("log")
    ax.set_yscale("log")
    plain_log_ticks(ax)
    ax.set_xlabel("MMACs (multiply-adds, log scale)")
    ax.set_ylabel("p50 latency, batch 1 (ms, log scale)")
    ax.set_title(title or f"MobileNet V1: latency vs MACs ({runtimes_title(drawn) or 'no data'})")
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    label_points(ax, labels, obstacles=[(r["macs"] / 1e6, r["p50_ms"]) for r in drawn], fontsize=7)
    return fig


def top1_vs_latency_figure(rows: list[dict], *, title: str = ""):
    """top-1 (%) vs p50 latency (ms) with the Pareto front (paper Figure 4 as latency); points labelled
    ``alpha/res``."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=120)
    pts = [r for r in rows if r.get("top1") is not None]
    labels = []
    for precision, marker in (("fp32", "o"), ("int8", "s")):
        rs = [r for r in pts if r["precision"] == precision and not is_reference(r)]
        ax.scatter([r["p50_ms"] for r in rs], [100 * r["top1"] for r in rs], marker=marker, label=precision, s=18)
        labels += [(r["p50_ms"], 100 * r["top1"], f"{r['alpha']:g}/{r['res']}") for r in rs if r.get("alpha") is not None]
    refs = [r for r in pts if is_reference(r)]
    if refs:
        ax.scatter([r["p50_ms"] for r in refs], [100 * r["top1"] for r in refs], marker="^", c="k",
                   label="Google int8 .tflite")
    front = pareto_front(pts)
    if front:
        ax.plot([r["p50_ms"] for r in front], [100 * r["top1"] for r in front], "r-", alpha=0.5, label="Pareto front")
    ax.set_xlabel("p50 latency, batch 1 (ms)")
    ax.set_ylabel("top-1 (%)")
    ax.set_title(title or f"MobileNet V1: top-1 vs latency ({runtimes_title(pts) or 'no data'})")
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    fig.tight_layout()
    label_points(ax, labels, obstacles=[(r["p50_ms"], 100 * r["top1"]) for r in pts], fontsize=6)
    return fig


def plot_latency_vs_macs(rows: list[dict], dst: str | Path, *, title: str = "") -> None:
    """Write :func:`latency_vs_macs_figure` to ``dst`` (.png, .pdf or .svg; atomically)."""
    _save(latency_vs_macs_figure(rows, title=title), dst)


def plot_top1_vs_latency(rows: list[dict], dst: str | Path, *, title: str = "") -> None:
    """Write :func:`top1_vs_latency_figure` to ``dst`` (.png, .pdf or .svg; atomically)."""
    _save(top1_vs_latency_figure(rows, title=title), dst)


def plain_log_ticks(ax) -> None:
    """Label log axes with plain numbers (``20``, ``300``, ``0.5``); minor ticks only at 2 and 5 x 10^k,
    so neighbours such as 300 and 400 do not collide."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    def plain(v, _pos) -> str:
        return f"{v:g}"

    for axis, scale in ((ax.xaxis, ax.get_xscale()), (ax.yaxis, ax.get_yscale())):
        if scale != "log":
            continue
        axis.set_major_formatter(FuncFormatter(plain))
        axis.set_minor_locator(LogLocator(base=10, subs=(2.0, 5.0)))
        axis.set_minor_formatter(FuncFormatter(plain))
        if len(axis.get_minorticklocs()) > 12:  # a wide range: majors only
            axis.set_minor_formatter(NullFormatter())


def label_points(ax, labels: list[tuple[float, float, str]], *, obstacles=(), fontsize: float = 7) -> list:
    """Annotate each ``(x, y, text)`` (data coordinates) at the first offset of :data:`LABEL_OFFSETS`
    whose text box overlaps no label placed before and no marker (``obstacles``: (x, y) points, each a
    box of +-:data:`MARKER_PX` pixels); when every offset collides, the first is kept. Call it after the
    axes' limits and layout are final (e.g. after ``tight_layout``): the boxes are measured in pixels.

    Returns:
        The ``matplotlib.text.Annotation`` objects, in ``labels`` order.
    """
    from matplotlib.transforms import Bbox

    fig = ax.figure
    fig.canvas.draw()  # limits, scales and layout settle; the renderer can measure text
    renderer = fig.canvas.get_renderer()
    taken = []
    for x, y in obstacles:
        px, py = ax.transData.transform((x, y))
        taken.append(Bbox.from_extents(px - MARKER_PX, py - MARKER_PX, px + MARKER_PX, py + MARKER_PX))
    placed = []
    for x, y, text in labels:
        first = None
        for dx, dy in LABEL_OFFSETS:
            ann = ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points", fontsize=fontsize,
                              ha="left" if dx > 0 else "right" if dx < 0 else "center", va="bottom")
            box = ann.get_window_extent(renderer)
            if not any(box.overlaps(b) for b in taken):
                break
            if first is None:
                first = (dx, dy)
            ann.remove()
        else:
            ann = ax.annotate(text, (x, y), xytext=first, textcoords="offset points", fontsize=fontsize,
                              ha="left" if first[0] > 0 else "right" if first[0] < 0 else "center", va="bottom")
            box = ann.get_window_extent(renderer)
        taken.append(box)
        placed.append(ann)
    return placed


def pareto_front(rows: list[dict]) -> list[dict]:
    """Rows not dominated by a faster-or-equal, more-accurate row, sorted by latency."""
    front, best = [], -1.0
    for r in sorted(rows, key=lambda r: (r["p50_ms"], -r["top1"])):
        if r["top1"] > best:
            front.append(r)
            best = r["top1"]
    return front


def check_plot_path(dst: str | Path, option: str = "--plot") -> Path:
    """A plot file name must end in one of :data:`PLOT_SUFFIXES` (the suffix picks the format).

    Raises:
        UsageError: another suffix (e.g. ``.txt``, which would hold PNG bytes).
    """
    dst = Path(dst)
    if dst.suffix.lower() not in PLOT_SUFFIXES:
        raise UsageError(f"{option} needs a .png (or .pdf/.svg) file name, got {dst.name}")
    return dst


def require_matplotlib() -> None:
    """Raises MobilenetEdgeError (exit 1, with the pip command) when matplotlib is not installed."""
    _pyplot()


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise MobilenetEdgeError("plots need matplotlib: pip install 'mobilenet-edge[plot]'") from None
    return plt


def _save(fig, dst) -> None:
    """Save (the layout was fixed before the labels were placed) and close the figure."""
    import matplotlib.pyplot as plt

    fmt = Path(dst).suffix.lower().lstrip(".")
    try:
        with atomic_path(dst) as tmp:
            fig.savefig(tmp, format=fmt if "." + fmt in PLOT_SUFFIXES else "png")
    finally:
        plt.close(fig)
