"""`edgevision compare`: accuracy drop vs speedup across runs, as a table, a Pareto plot and reports.

Rows come from the report.json of compress/prune/export runs (a directory of runs, such as a sweep, is
searched for them). The accuracy axis is top-1 where the runs had labels, else agreement with the float
model. A row is on the Pareto frontier when no other timed row is at least as fast and at least as accurate
and better in one of the two. Runs evaluated on different data are not compared unless asked.
"""
from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable

from edgevision.errors import EdgevisionError
from edgevision.io import atomic_write_bytes, make_parent
from edgevision.reports.render import fmt


@dataclass
class Row:
    model: str
    variant: str  # fp32, int8, pruned 50%, pruned 50% + int8, ...
    runtime: str
    top1: float | None
    drop: float | None
    agreement: float
    latency_ms_p50: float | None
    latency_ms_p90: float | None
    throughput_ips: float | None  # batch 1: 1000 / p50
    size_mb: float | None
    speedup: float | None
    data: str
    images: int
    run: str
    target: str
    role: str = "candidate"  # reference | pruned | candidate (pipeline/context.Role)
    pareto: bool = False

    @property
    def accuracy(self) -> float:
        return self.top1 if self.top1 is not None else self.agreement

    @property
    def label(self) -> str:
        return f"{self.model} {self.variant}"


def find_reports(paths: Iterable[str | Path]) -> list[Path]:
    """report.json of each run directory given, or of every run below a directory of runs (a sweep)."""
    found: list[Path] = []
    for path in map(Path, paths):
        if (path / "report.json").is_file():
            found.append(path / "report.json")
        elif path.is_dir():
            below = sorted(p for p in path.rglob("report.json") if not any(part.startswith(".") for part in p.parts))
            if not below:
                raise EdgevisionError(f"{path} holds no edgevision run (no report.json)",
                                      "give run directories made by compress, prune, export or sweep")
            found += below
        else:
            raise EdgevisionError(f"{path} is not a run directory", "give run directories made by compress or sweep")
    return list(dict.fromkeys(found))


def _role(v: dict[str, Any]) -> str:
    """The variant's role; reports written before roles existed are read by their variant names."""
    if "role" in v:
        return v["role"]
    legacy = {("fp32", "pytorch"): "reference", ("pruned", "pytorch"): "pruned",
              ("pruned, before recovery", "pytorch"): "pruned-before-recovery"}
    return legacy.get((v["name"], v["runtime"]), "candidate")


def _variant_label(v: dict[str, Any], pruned_prefix: str) -> str:
    """fp32, int8, pruned 50%, pruned 50% + int8, ..."""
    role = _role(v)
    if role == "reference":
        return v["name"]  # the unpruned float reference
    if role == "pruned":
        return pruned_prefix
    return f"{pruned_prefix} + {v['name']}" if pruned_prefix else v["name"]


def rows_from_report(report: dict[str, Any], run: str) -> list[Row]:
    pruning = report.get("pruning")
    prefix = f"pruned {pruning['ratio']:.0%}" if pruning else ""
    rows = []
    for v in report["variants"]:
        if _role(v) == "pruned-before-recovery":
            continue  # a step, not a deployable model
        variant = _variant_label(v, prefix)
        p50 = v.get("latency_ms_p50")
        rows.append(Row(
            model=report["model"]["name"], variant=variant, runtime=v["runtime"], top1=v["top1"], drop=v["top1_drop"],
            agreement=v["agreement"], latency_ms_p50=p50, latency_ms_p90=v.get("latency_ms_p90"),
            throughput_ips=1000.0 / p50 if p50 else None, size_mb=v.get("size_mb"), speedup=v.get("speedup"),
            data=report["data"]["spec"], images=report["data"]["images"], run=run, target=report.get("target", "cpu"),
            role=_role(v)))
    return rows


def load_rows(paths: Iterable[str | Path], allow_mixed: bool = False) -> list[Row]:
    rows: list[Row] = []
    for report_path in find_reports(paths):
        try:
            report = json.loads(report_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise EdgevisionError(f"{report_path} is not readable JSON", "rerun the command that wrote it") from None
        rows += rows_from_report(report, str(report_path.parent))
    if not rows:
        raise EdgevisionError("no variants to compare", "give run directories made by compress or sweep")
    datasets = sorted({(r.data, r.images) for r in rows})
    if len(datasets) > 1 and not allow_mixed:
        shown = " vs ".join(f"{d} ({n} images)" for d, n in datasets[:3])
        raise EdgevisionError(f"the runs were evaluated on different data: {shown}",
                              "compare runs made on the same data, or pass --allow-mixed")
    rows = _dedupe_references(rows)
    mark_pareto(rows)
    return rows


def _dedupe_references(rows: list[Row]) -> list[Row]:
    """Every run carries its model's PyTorch models (the FP32 reference, the pruned model) whatever its target:
    keep one of each per model and data."""
    seen, out = set(), []
    for r in rows:
        if r.role != "candidate":  # the PyTorch reference and pruned models, which every target's run has
            key = (r.model, r.variant, r.data, r.images)
            if key in seen:
                continue
            seen.add(key)
        out.append(r)
    return out


def mark_pareto(rows: list[Row]) -> None:
    timed = [r for r in rows if r.latency_ms_p50 is not None]
    for r in rows:
        r.pareto = r in timed and not any(
            o is not r and o.latency_ms_p50 <= r.latency_ms_p50 and o.accuracy >= r.accuracy
            and (o.latency_ms_p50 < r.latency_ms_p50 or o.accuracy > r.accuracy) for o in timed)


COLUMNS = ["model", "variant", "runtime", "top-1 %", "drop", "agreement %", "p50 ms", "p90 ms", "img/s (batch 1)",
           "size MB", "speedup", "Pareto"]


def table_cells(row: Row) -> list[str]:
    f = fmt
    return [row.model, row.variant, row.runtime, f(row.top1), f(row.drop), f(row.agreement), f(row.latency_ms_p50),
            f(row.latency_ms_p90), f(row.throughput_ips, 1), f(row.size_mb, 1), f(row.speedup, 2, "x"),
            "*" if row.pareto else ""]


def sorted_rows(rows: list[Row]) -> list[Row]:
    return sorted(rows, key=lambda r: (r.model, r.latency_ms_p50 is None, r.latency_ms_p50 or 0))


def rich_table(rows: list[Row]):
    from rich.table import Table

    table = Table(title=f"accuracy vs latency on {rows[0].data} ({rows[0].images} images); * = Pareto frontier")
    for col in COLUMNS:
        table.add_column(col, justify="left" if col in ("model", "variant", "runtime") else "right", no_wrap=True)
    for r in sorted_rows(rows):
        table.add_row(*table_cells(r))
    return table


def markdown(rows: list[Row]) -> str:
    lines = [f"Accuracy vs latency on {rows[0].data} ({rows[0].images} images); * = on the Pareto frontier.", "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(table_cells(r)) + " |" for r in sorted_rows(rows)]
    return "\n".join(lines) + "\n"


def plot_png(rows: list[Row]) -> bytes:
    """Accuracy against p50 latency: a point per timed row, labelled, coloured by runtime, frontier drawn.

    Drawn on a Figure with its own Agg canvas: no pyplot, so the process's matplotlib backend is left alone."""
    from matplotlib import colormaps  # heavy: only when a plot is asked for
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    timed = [r for r in rows if r.latency_ms_p50 is not None]
    if not timed:
        raise EdgevisionError("no timed variant to plot", "compare runs with timed variants (cpu or onnx targets)")
    labelled = all(r.top1 is not None for r in timed)
    fig = Figure(figsize=(11, 6.5), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    colors = colormaps["tab10"]
    markers = "osD^v<>p*h"
    by_runtime: dict[str, list[Row]] = {}
    for r in timed:
        by_runtime.setdefault(r.runtime, []).append(r)
    for i, (runtime, pts) in enumerate(sorted(by_runtime.items())):
        ax.scatter([r.latency_ms_p50 for r in pts], [r.accuracy for r in pts], s=60, color=colors(i),
                   marker=markers[i % len(markers)], label=runtime, zorder=3, edgecolors="black", linewidths=0.5)
    latencies = [r.latency_ms_p50 for r in timed]
    if max(latencies) / max(min(latencies), 1e-9) > 5:
        ax.set_xscale("log")
    _label_points(fig, ax, timed)
    frontier = sorted((r for r in timed if r.pareto), key=lambda r: r.latency_ms_p50)
    if frontier:
        ax.plot([r.latency_ms_p50 for r in frontier], [r.accuracy for r in frontier], "--", color="grey",
                drawstyle="steps-post", label="Pareto frontier", zorder=2)
    ax.set_xlabel("latency p50, batch 1 (ms)")
    ax.set_ylabel("top-1 accuracy (%)" if labelled else "top-1 agreement with the float model (%)")
    ax.set_title(f"accuracy vs latency on {timed[0].data} ({timed[0].images} images)")
    ax.margins(x=0.12)
    ax.grid(True, alpha=0.3)
    ax.legend(title="runtime", loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _label_points(fig, ax, rows: list[Row]) -> None:
    """Label every point; a label that would land on an earlier one is moved down a line until it is free."""
    fig.canvas.draw()  # fixes the axes' transform
    placed: list[tuple[float, float, float]] = []  # label boxes in pixels: left, right, baseline
    for r in sorted(rows, key=lambda r: (-r.accuracy, r.latency_ms_p50)):
        x, y = ax.transData.transform((r.latency_ms_p50, r.accuracy))
        width = 5.0 * len(r.label) + 10
        dy = 4
        while any(x < right and left < x + width and abs((y + dy) - base) < 11 for left, right, base in placed):
            dy -= 11
        placed.append((x, x + width, y + dy))
        ax.annotate(r.label, (r.latency_ms_p50, r.accuracy), textcoords="offset points", xytext=(6, dy), fontsize=7,
                    arrowprops={"arrowstyle": "-", "color": "0.6", "lw": 0.5} if dy < -6 else None)


def html_report(rows: list[Row], png: bytes | None) -> str:
    """One self-contained page: the table and the plot (embedded as a data URI), no external resources."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in COLUMNS)
    body = []
    for r in sorted_rows(rows):
        cells = "".join(f"<td>{html.escape(c)}</td>" for c in table_cells(r))
        body.append(f'<tr class="{"pareto" if r.pareto else ""}">{cells}</tr>')
    image = (f'<img id="plot" alt="accuracy vs latency" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
             if png else "<p>No timed variants to plot.</p>")
    runs = "".join(f"<li>{html.escape(run)}</li>" for run in sorted({r.run for r in rows}))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>edgevision: accuracy vs latency</title>
<style>
body {{ font-family: sans-serif; margin: 2em; }}
table {{ border-collapse: collapse; }} th, td {{ border: 1px solid #ccc; padding: 4px 8px; text-align: right; }}
td:nth-child(-n+3), th:nth-child(-n+3) {{ text-align: left; }} tr.pareto {{ background: #eef7ee; font-weight: bold; }}
img {{ max-width: 100%; margin-top: 1em; }}
</style></head><body>
<h1>Accuracy vs latency</h1>
<p>Evaluated on {html.escape(rows[0].data)} ({rows[0].images} images). Bold rows are on the Pareto frontier
(no other variant is both faster and more accurate). Latency is p50 at batch 1; speedup is against each
model's PyTorch FP32.</p>
<table id="variants"><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>
{image}
<h2>Runs</h2><ul>{runs}</ul>
</body></html>
"""


def write_outputs(rows: list[Row], plot: Path | None = None, html_path: Path | None = None,
                  markdown_path: Path | None = None) -> dict[str, str]:
    """Write the asked-for files (each via a temporary file and a rename); return what was written."""
    written = {}
    png = plot_png(rows) if (plot or html_path) and any(r.latency_ms_p50 for r in rows) else None
    for path, content in ((plot, png), (html_path, html_report(rows, png) if html_path else None),
                          (markdown_path, markdown(rows) if markdown_path else None)):
        if path is None or content is None:
            continue
        path = Path(path)
        make_parent(path)
        atomic_write_bytes(path, content if isinstance(content, bytes) else content.encode("utf-8"))
        written[path.suffix.lstrip(".")] = str(path)
    return written


def rows_to_json(rows: list[Row]) -> list[dict[str, Any]]:
    return [asdict(r) for r in sorted_rows(rows)]
