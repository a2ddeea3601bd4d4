"""The comparison plot: accuracy drop against speedup per model (left), accuracy against latency (right).

Colour = model, marker = kind of variant, a line per model = its own Pareto frontier, a ring = the variant its
run selected. Points drawn on one spot share a label. Labels are placed by adjustText in a fixed number of
iterations (the same plot however fast the machine); the boxes they ended in are returned with the image, so that
a test (or a reader of the HTML's data-label-boxes) can check that none overlaps another. When they cannot
be kept apart, the points get numbered keys and a key list beside the plot names them, nearby points sharing
one label in wider groups when keys collide; when even those collide, the points go unlabelled (colour, marker
and the table tell them apart).

Drawn on a Figure with its own Agg canvas: no pyplot, so the process's matplotlib backend is left alone.
"""
from __future__ import annotations

import io
from dataclasses import dataclass

from edgevision.errors import EdgevisionError
from edgevision.reports.rows import Row

MARKERS = {"fp32": "o", "int8": "s", "pruned": "^", "pruned + int8": "D"}
SPEEDUP_TICKS = (0.25, 0.5, 0.75, 1, 1.25, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10, 15, 20)
SPARSE_SPEEDUP_TICKS = (0.25, 0.5, 1, 2, 3, 5, 10, 20)  # when the axis spans more than 6x
NEAR_PX = 6  # points closer than this (in pixels, both ways) share a label: their markers overlap anyway
# numbered keys that collide are tried again with points this close sharing one ("3, 4, 5"): a cluster of a
# model's INT8 variants a few percent apart in speed crowds keys that adjustText cannot part
KEY_GROUPING_PX = (NEAR_PX, 2 * NEAR_PX, 4 * NEAR_PX)
# adjustText steps per pass (about 0.4 s for 15 labels), and passes; 1000 steps parted no pair that 400 left
# touching, a second pass from where they were parted half of them
ADJUST_ITERATIONS = 400
ADJUST_PASSES = 3


@dataclass
class LabelBox:
    """A label's box in the PNG's pixels (origin top left)."""
    text: str
    x0: float
    y0: float
    x1: float
    y1: float


@dataclass
class Plot:
    png: bytes
    width: int
    height: int
    label_boxes: list[LabelBox]
    labels: str  # labels | keys (too crowded: numbers on the points, a key list names them) | legend (none)


def overlapping(boxes: list[LabelBox]) -> list[tuple[str, str]]:
    """Pairs of labels whose boxes intersect."""
    return [(a.text, b.text) for i, a in enumerate(boxes) for b in boxes[i + 1:]
            if a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1]


def plot_comparison(rows: list[Row], labelled: bool, title: str) -> Plot:
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # heavy: only when a plot is asked for
    from matplotlib.figure import Figure

    timed = [r for r in rows if r.latency_ms_p50 is not None and r.speedup is not None]
    if not timed:
        raise EdgevisionError("no timed variant to plot", "compare runs with timed variants (cpu or onnx targets)")
    fig = Figure(figsize=(14, 7), dpi=100)
    FigureCanvasAgg(fig)
    drop_ax, latency_ax = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    colours = _model_colours(timed)
    metric = "top-1 points" if labelled else "agreement points lost"
    _draw(drop_ax, timed, colours, lambda r: r.speedup, lambda r: r.accuracy_drop)
    drop_ax.axhline(0, color="0.6", lw=0.8, ls=":")
    drop_ax.set_xlabel("speedup over the model's own PyTorch FP32 (log scale)")
    drop_ax.set_ylabel(f"accuracy drop ({metric}); lower right is better")
    drop_ax.set_title("accuracy drop vs speedup, per model", fontsize=10)
    _speedup_axis(drop_ax, [r.speedup for r in timed])
    _pad_limits(drop_ax, [r.accuracy_drop for r in timed])
    _draw(latency_ax, timed, colours, lambda r: r.latency_ms_p50, lambda r: r.accuracy)
    latencies = [r.latency_ms_p50 for r in timed]
    if max(latencies) / max(min(latencies), 1e-9) > 5:
        _plain_log_axis(latency_ax)
    latency_ax.set_xlabel("latency p50, batch 1 (ms)")
    latency_ax.set_ylabel("top-1 accuracy (%)" if labelled else "top-1 agreement with the float model (%)")
    latency_ax.set_title("accuracy vs latency, across models", fontsize=10)
    _pad_limits(latency_ax, [r.accuracy for r in timed])
    fig.suptitle(title, fontsize=11)
    fig.legend(handles=_legend_handles(colours), loc="lower center", ncol=min(8, len(colours) + len(MARKERS) + 2),
               fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    boxes, labels = _label(fig, drop_ax, timed)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    width, height = fig.canvas.get_width_height()
    return Plot(buf.getvalue(), width, height, boxes, labels)


def _model_colours(rows: list[Row]) -> dict[str, tuple]:
    from matplotlib import colormaps

    palette = colormaps["tab10"]
    return {model: palette(i % 10) for i, model in enumerate(sorted({r.model for r in rows}))}


def _draw(ax, rows: list[Row], colours: dict[str, tuple], x, y) -> None:
    """Points (colour = model, marker = kind), each model's frontier as a line, the selected variant ringed."""
    for model, colour in colours.items():
        mine = [r for r in rows if r.model == model]
        frontier = sorted((r for r in mine if r.pareto), key=x)
        if len(frontier) > 1:
            ax.plot([x(r) for r in frontier], [y(r) for r in frontier], "-", color=colour, alpha=0.55, lw=1.5, zorder=2)
        for kind, marker in MARKERS.items():
            pts = [r for r in mine if r.kind == kind]
            if pts:
                ax.scatter([x(r) for r in pts], [y(r) for r in pts], s=55, color=colour, marker=marker, zorder=3,
                           edgecolors="black", linewidths=0.5)
    ringed = [r for r in rows if r.selected]
    if ringed:
        ax.scatter([x(r) for r in ringed], [y(r) for r in ringed], s=260, facecolors="none", edgecolors="black",
                   linewidths=1.6, zorder=4)
    ax.grid(True, alpha=0.3)


def _speedup_axis(ax, speedups: list[float]) -> None:
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    low, high = min(speedups + [1.0]) / 1.15, max(speedups + [1.0]) * 1.15
    ax.set_xscale("log")
    ax.set_xlim(low, high)
    ticks = SPARSE_SPEEDUP_TICKS if high / low > 6 else SPEEDUP_TICKS
    ax.xaxis.set_major_locator(FixedLocator([t for t in ticks if low <= t <= high]))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
    ax.xaxis.set_minor_locator(NullLocator())


def _plain_log_axis(ax) -> None:
    """Log scale with ticks at 1, 2, 5 x 10^k written as plain numbers (50, 100, 200), not as powers."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _pad_limits(ax, values: list[float]) -> None:
    low, high = min(values), max(values)
    pad = max((high - low) * 0.15, 0.5)
    ax.set_ylim(low - pad, high + pad)


def _legend_handles(colours: dict[str, tuple]) -> list:
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], ls="-", marker="o", color=c, markeredgecolor="black", label=m) for m, c in colours.items()]
    handles += [Line2D([], [], ls="", marker=mk, color="0.75", markeredgecolor="black", label=kind)
                for kind, mk in MARKERS.items()]
    handles.append(Line2D([], [], ls="", marker="o", markersize=13, markerfacecolor="none", markeredgecolor="black",
                          label="selected"))
    return handles


def point_label(row: Row) -> str:
    """Short, as the marker already shows the kind: the runtime, an INT8 format other than the default
    (int8-s8s8 -> s8s8), and the prune ratio of pruned variants."""
    words = row.variant.split()
    ratio = words[1] if words[0] == "pruned" and len(words) > 1 else ""
    fmt = words[-1].split("-", 1)[1] if words[-1].startswith("int8-") else ""
    return " ".join(w for w in (row.runtime_short, fmt, ratio) if w)


def _label(fig, ax, rows: list[Row]) -> tuple[list[LabelBox], str]:
    """Labels placed by adjustText: short ones, else numbered keys with a key list, else none (the legend and
    the table name the points). The PyTorch references all sit at (1x, 0): one label says so."""
    labelled = [r for r in rows if r.role != "reference"]
    reference = [("PyTorch FP32 (each model's reference)", 1.0, 0.0)] if len(labelled) < len(rows) else []
    boxes = _place(fig, ax, _anchors(ax, labelled, [point_label(r) for r in labelled]) + reference)
    if not overlapping(boxes):
        return boxes, "labels"
    _clear_labels(ax)
    keys = [str(i + 1) for i in range(len(labelled))]
    fig.text(0.995, 0.5, "\n".join(f"{k}  {r.model} {r.variant} {r.runtime_short}" for k, r in zip(keys, labelled)),
             fontsize=6.5, va="center", ha="right", family="monospace")
    fig.subplots_adjust(right=0.8)  # room for the key list
    for near in KEY_GROUPING_PX:
        boxes = _place(fig, ax, _anchors(ax, labelled, keys, near) + reference)
        if not overlapping(boxes):
            return boxes, "keys"
        _clear_labels(ax)
    return [], "legend"


def _anchors(ax, rows: list[Row], texts: list[str], near_px: float = NEAR_PX) -> list[tuple[str, float, float]]:
    """(text, speedup, drop) per label. Points drawn within `near_px` of each other share one label ("OV, OV bf16",
    each text once): adjustText cannot part labels anchored at one spot (it runs out of iterations pushing them),
    and one label there reads as well."""
    at = ax.transData.transform([(r.speedup, r.accuracy_drop) for r in rows])
    groups: list[list[int]] = []
    for i, (x, y) in enumerate(at):
        near = next((g for g in groups if abs(at[g[0]][0] - x) <= near_px and abs(at[g[0]][1] - y) <= near_px),
                    None)
        if near is None:
            groups.append([i])
        else:
            near.append(i)
    # two models' variants on one spot often read alike ("OV bf16"): their colours tell them apart, one text will do
    return [(", ".join(dict.fromkeys(texts[i] for i in g)), rows[g[0]].speedup, rows[g[0]].accuracy_drop)
            for g in groups]


def _clear_labels(ax) -> None:
    for artist in list(ax.texts) + list(ax.patches):  # the labels and adjustText's leader lines
        artist.remove()


def _place(fig, ax, anchors: list[tuple[str, float, float]]) -> list[LabelBox]:
    """Draws each (text, x, y) label, lets adjustText move them apart, and returns the boxes they ended in.
    Bounded by iterations, not seconds, so that the same rows give the same plot on a slow machine. A pass
    can stop with two labels touching (adjustText checks its own estimate of the boxes, not the drawn ones):
    another pass from where they are usually parts them."""
    from adjustText import adjust_text

    xs, ys = [x for _, x, _ in anchors], [y for _, _, y in anchors]
    artists = [ax.text(x, y, t, fontsize=7, zorder=5) for t, x, y in anchors]
    for _ in range(ADJUST_PASSES):
        for line in list(ax.patches):  # the previous pass's leader lines
            line.remove()
        adjust_text(artists, x=xs, y=ys, ax=ax, expand=(1.2, 1.5), ensure_inside_axes=True,
                    iter_lim=ADJUST_ITERATIONS, arrowprops={"arrowstyle": "-", "color": "0.5", "lw": 0.5})
        boxes = _drawn_boxes(fig, artists)
        if not overlapping(boxes):
            break
    return boxes


def _drawn_boxes(fig, artists) -> list[LabelBox]:
    renderer = fig.canvas.get_renderer()
    fig.canvas.draw()
    height = fig.bbox.height
    boxes = []
    for artist in artists:
        bb = artist.get_window_extent(renderer)
        boxes.append(LabelBox(artist.get_text(), round(bb.x0, 1), round(height - bb.y1, 1), round(bb.x1, 1),
                              round(height - bb.y0, 1)))
    return boxes
