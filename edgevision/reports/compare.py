"""`edgevision compare`: accuracy drop vs speedup across runs, as a table, a plot and reports.

Rows come from the report.json of compress/prune/export runs (a directory of runs, such as a sweep, is
searched for them), and from the decision.json a CPU deploy bundle's select_model.py wrote on a device (read in
place of the bundle's own report.json: reports/decisions.py). The accuracy axis is top-1 where the runs had labels, else agreement with the float
model; the drop is against each model's own PyTorch FP32. Each model has its own Pareto frontier: a row is on
it when no other timed row of that model is at least as fast and at least as accurate and better in one of
the two. Every output carries the runs' caveats (their warnings, the evaluation set's size, CPUs and times
that differ). Runs evaluated on different data are not compared unless asked.
"""
from __future__ import annotations

import base64
import html
import json
from dataclasses import asdict
from pathlib import Path
from typing import Iterable

from edgevision.errors import EdgevisionError
from edgevision.io import atomic_write_bytes, make_parent
from edgevision.pipeline.report import Role, RunReport, VariantRecord
from edgevision.reports.compare_plot import Plot, plot_comparison
from edgevision.reports.decisions import report_from_decision
from edgevision.reports.render import fmt
from edgevision.reports.rows import Comparison, Row
from edgevision.runtimes import RUNTIMES

__all__ = ["Comparison", "Row", "load_comparison", "load_rows", "mark_pareto", "rich_table", "markdown",
           "html_report", "write_outputs", "sorted_rows", "caveats"]

SMALL_EVAL_SET = 1000  # fewer images than this: say what one flipped image is worth
RUNS_APART_S = 120  # runs further apart than this: say so (latencies across runs are not side by side)


DECISION = "decision.json"  # a CPU deploy bundle after select_model.py ran on a device


def find_reports(paths: Iterable[str | Path]) -> list[Path]:
    """report.json of each run directory given (decision.json in a bundle that has one), or of every run below a
    directory of runs (a sweep)."""
    found: list[Path] = []
    for path in map(Path, paths):
        if (path / DECISION).is_file() or (path / "report.json").is_file():
            found.append(run_file(path))
        elif path.is_dir():
            below = sorted(p for p in path.rglob("report.json") if not any(part.startswith(".") for part in p.parts))
            if not below:
                raise EdgevisionError(f"{path} holds no edgevision run (no report.json)",
                                      "give run directories made by compress, prune, export or sweep")
            found += [run_file(p.parent) for p in below]
        else:
            raise EdgevisionError(f"{path} is not a run directory", "give run directories made by compress or sweep")
    return list(dict.fromkeys(found))


def run_file(run_dir: str | Path) -> Path:
    """The file a run's rows come from: decision.json of a bundle checked on a device, else report.json."""
    decision = Path(run_dir) / DECISION
    return decision if decision.is_file() else Path(run_dir) / "report.json"


def load_report(path: Path) -> RunReport:
    """A report.json (of this version or an older one), or a decision.json read as one."""
    if path.name == DECISION:
        return report_from_decision(path)
    return RunReport.load(path)


def _variant_label(v: VariantRecord, pruned_prefix: str) -> str:
    """fp32, int8, pruned 50%, pruned 50% + int8, ..."""
    if v.role is Role.REFERENCE:
        return v.name  # the unpruned float reference
    if v.role is Role.PRUNED:
        return pruned_prefix
    return f"{pruned_prefix} + {v.name}" if pruned_prefix else v.name


def rows_from_report(report: RunReport, run: str) -> list[Row]:
    prefix = f"pruned {report.pruning.ratio:.0%}" if report.pruning else ""
    rows = []
    for v in report.variants:
        if v.role is Role.PRUNED_BEFORE_RECOVERY:
            continue  # a step, not a deployable model
        p50 = v.latency_ms_p50
        rows.append(Row(
            model=report.model.name, variant=_variant_label(v, prefix), runtime=v.runtime, top1=v.top1,
            drop=v.top1_drop, agreement=v.agreement, latency_ms_p50=p50, latency_ms_p90=v.latency_ms_p90,
            throughput_ips=1000.0 / p50 if p50 else None, size_mb=v.size_mb, speedup=v.speedup,
            data=report.data.spec, images=report.data.images, run=run, target=report.target, role=v.role.value,
            selected=v.selected))
    return rows


def load_comparison(paths: Iterable[str | Path], allow_mixed: bool = False) -> Comparison:
    """Every run's rows (one PyTorch reference per model, each model's frontier marked) and their caveats."""
    rows: list[Row] = []
    reports: dict[str, RunReport] = {}
    finished: list[float] = []  # when each report.json was written, for the timing caveat
    for report_path in find_reports(paths):
        report = load_report(report_path)
        finished.append(report_path.stat().st_mtime)
        reports[str(report_path.parent)] = report
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
    return Comparison(rows, caveats(reports, finished))


def load_rows(paths: Iterable[str | Path], allow_mixed: bool = False) -> list[Row]:
    return load_comparison(paths, allow_mixed).rows


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
    """Each model's own frontier: a timed row no other timed row of the same model (and data) dominates."""
    timed = [r for r in rows if r.latency_ms_p50 is not None]
    for r in rows:
        rivals = [o for o in timed if (o.model, o.data) == (r.model, r.data) and o is not r]
        r.pareto = r.latency_ms_p50 is not None and not any(
            o.latency_ms_p50 <= r.latency_ms_p50 and o.accuracy >= r.accuracy
            and (o.latency_ms_p50 < r.latency_ms_p50 or o.accuracy > r.accuracy) for o in rivals)


def caveats(reports: dict[str, RunReport], finished: list[float]) -> list[str]:
    """What a reader must know before trusting the numbers: the runs' own warnings (with the models they came
    from), a small evaluation set, runs timed on different CPUs or far apart in time."""
    said: dict[str, list[str]] = {}
    for report in reports.values():
        for warning in report.warnings:
            models = said.setdefault(warning, [])
            if report.model.name not in models:
                models.append(report.model.name)
    out = [f"{warning} ({', '.join(models)})" for warning, models in said.items()]
    for spec, images in sorted({(r.data.spec, r.data.images) for r in reports.values()}):
        if 0 < images < SMALL_EVAL_SET:
            out.append(f"only {images} images of {spec} evaluated: one image changing its answer moves accuracy "
                       f"by {100 / images:.2f} points")
    cpus = sorted({_cpu(r) for r in reports.values()})
    if len(cpus) > 1:
        out.append(f"runs timed on different CPUs ({'; '.join(cpus)}): compare speedups, not latencies, across them")
    if max(finished) - min(finished) > RUNS_APART_S:
        out.append(f"runs made {(max(finished) - min(finished)) / 60:.0f} minutes apart: each speedup is timed side by "
                   "side within its run; latencies across runs are not")
    return out


def _cpu(report: RunReport) -> str:
    bench = report.benchmark
    profile = bench.cpu_profile or {}
    tier = f", INT8 tier {profile['tier']}" if profile.get("tier") else ""
    return f"{profile.get('model') or bench.cpu or '?'}{tier}, {bench.threads or '?'} threads"


def sorted_rows(rows: list[Row]) -> list[Row]:
    """Grouped by model, fastest first within each."""
    return sorted(rows, key=lambda r: (r.model, r.latency_ms_p50 is None, r.latency_ms_p50 or 0))


def _marks(row: Row) -> str:
    return " ".join(m for m, on in (("*", row.pareto), ("pick", row.selected)) if on)


COLUMNS = ["model", "variant", "runtime", "top-1 %", "drop", "agreement %", "p50 ms", "p90 ms", "img/s (batch 1)",
           "size MB", "speedup", "Pareto", "selected"]
NARROW_COLUMNS = ["variant", "rt", "acc %", "drop", "ms", "speedup", "mark"]
MARKS_LEGEND = "* = on the model's Pareto frontier; pick = the variant its run selected"


def table_cells(row: Row) -> list[str]:
    f = fmt
    return [row.model, row.variant, row.runtime, f(row.top1), f(row.drop), f(row.agreement), f(row.latency_ms_p50),
            f(row.latency_ms_p90), f(row.throughput_ips, 1), f(row.size_mb, 1), f(row.speedup, 2, "x"),
            "*" if row.pareto else "", "pick" if row.selected else ""]


def narrow_cells(row: Row) -> list[str]:
    """What fits in 80 columns: the model is its group's heading, accuracy is top-1 or agreement."""
    f = fmt
    return [row.variant, row.runtime_short, f(row.accuracy), f(row.accuracy_drop), f(row.latency_ms_p50, 1),
            f(row.speedup, 2, "x"), _marks(row)]


def _title(comparison: Comparison) -> str:
    first = comparison.rows[0]
    metric = "top-1" if comparison.labelled else "agreement with the float model"
    return f"accuracy ({metric}) drop vs speedup on {first.data} ({first.images} images)"


def rich_table(comparison: Comparison, wide: bool = False):
    """The terminal table: narrow by default (fits 80 columns; rows grouped under their model), all columns
    with `wide`; the caveats as its caption."""
    from rich import box
    from rich.table import Table

    table = Table(title=_title(comparison), box=box.SIMPLE_HEAD, title_justify="left", caption_justify="left")
    columns = COLUMNS if wide else NARROW_COLUMNS
    for col in columns:
        table.add_column(col, justify="left" if col in ("model", "variant", "runtime", "rt", "mark") else "right",
                         no_wrap=col != "variant", overflow="fold")
    model = None
    for r in sorted_rows(comparison.rows):
        if not wide and r.model != model:
            table.add_row(f"[bold]{r.model}[/bold]", *[""] * (len(columns) - 1), end_section=False)
            model = r.model
        table.add_row(*(table_cells(r) if wide else narrow_cells(r)))
    legend = MARKS_LEGEND + ("" if wide else "; rt: " + ", ".join(
        f"{RUNTIMES[n].short} {n}" for n in sorted({r.runtime for r in comparison.rows}) if n in RUNTIMES))
    table.caption = "\n".join([legend] + [f"caveat: {c}" for c in comparison.caveats])
    return table


def markdown(comparison: Comparison) -> str:
    lines = [f"{_title(comparison)[0].upper()}{_title(comparison)[1:]}. {MARKS_LEGEND}.", "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(table_cells(r)) + " |" for r in sorted_rows(comparison.rows)]
    if comparison.caveats:
        lines += ["", "Caveats:", ""] + [f"- {c}" for c in comparison.caveats]
    return "\n".join(lines) + "\n"


def html_report(comparison: Comparison, plot: Plot | None) -> str:
    """One self-contained page (no script, nothing fetched): caveats, the plot (a data URI, its label boxes in
    data-label-boxes for checking), the table grouped by model."""
    rows = comparison.rows
    head = "".join(f"<th>{html.escape(c)}</th>" for c in COLUMNS)
    body = []
    for r in sorted_rows(rows):
        cells = "".join(f"<td>{html.escape(c)}</td>" for c in table_cells(r))
        classes = " ".join(c for c, on in (("pareto", r.pareto), ("selected", r.selected)) if on)
        body.append(f'<tr class="{classes}" data-model="{html.escape(r.model)}">{cells}</tr>')
    image = "<p>No timed variants to plot.</p>"
    if plot:
        boxes = html.escape(json.dumps([asdict(b) for b in plot.label_boxes]))
        image = (f'<img id="plot" alt="accuracy drop vs speedup, per model" width="{plot.width}" '
                 f'height="{plot.height}" data-label-boxes="{boxes}" '
                 f'src="data:image/png;base64,{base64.b64encode(plot.png).decode()}">')
    caveat_items = "".join(f"<li>{html.escape(c)}</li>" for c in comparison.caveats) or "<li>none</li>"
    runs = "".join(f"<li>{html.escape(run)}</li>" for run in sorted({r.run for r in rows}))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>edgevision: accuracy drop vs speedup</title>
<style>
body {{ font-family: sans-serif; margin: 2em; }}
table {{ border-collapse: collapse; }} th, td {{ border: 1px solid #ccc; padding: 4px 8px; text-align: right; }}
td:nth-child(-n+3), th:nth-child(-n+3) {{ text-align: left; }} tr.pareto {{ background: #eef7ee; font-weight: bold; }}
tr.selected td:first-child::before {{ content: "\\25B6  "; }}
#caveats {{ background: #fff6e0; border-left: 4px solid #e0a000; padding: 0.5em 2em; }}
img {{ max-width: 100%; height: auto; margin-top: 1em; }}
</style></head><body>
<h1>Accuracy drop vs speedup</h1>
<p>{html.escape(_title(comparison))}. Speedup is against each model's own PyTorch FP32 (p50 latency, batch 1).
Bold rows are on their model's Pareto frontier (no other variant of that model is both faster and more
accurate); the row marked &#9654; is the variant its run selected.</p>
<h2>Caveats</h2><ul id="caveats">{caveat_items}</ul>
{image}
<table id="variants"><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>
<h2>Runs</h2><ul>{runs}</ul>
</body></html>
"""


def write_outputs(comparison: Comparison, plot: Path | None = None, html_path: Path | None = None,
                  markdown_path: Path | None = None) -> dict[str, str]:
    """Write the asked-for files (each via a temporary file and a rename); return what was written."""
    written = {}
    drawn = (plot_comparison(comparison.rows, comparison.labelled, _title(comparison))
             if (plot or html_path) and any(r.latency_ms_p50 for r in comparison.rows) else None)
    for path, content in ((plot, drawn.png if drawn else None),
                          (html_path, html_report(comparison, drawn) if html_path else None),
                          (markdown_path, markdown(comparison) if markdown_path else None)):
        if path is None or content is None:
            continue
        path = Path(path)
        make_parent(path)
        atomic_write_bytes(path, content if isinstance(content, bytes) else content.encode("utf-8"))
        written[path.suffix.lstrip(".")] = str(path)
    return written

