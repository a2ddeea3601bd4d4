"""What the terminal shows of a run: table cells and the variants table."""
from __future__ import annotations

from typing import Any

from edgevision.measure.layers import Int8Report, LayerReport
from edgevision.pipeline.report import RunReport
from edgevision.pipeline.selection import budget_text
from edgevision.runtimes import runtime_info


def fmt(value: Any, digits: int = 2, suffix: str = "") -> str:
    """A table cell: '-' for a missing value, floats to `digits` places."""
    if value is None:
        return "-"
    return (f"{value:.{digits}f}" if isinstance(value, float) else str(value)) + suffix


def variants_table(report: RunReport):
    """The accuracy-drop vs speedup table of a report, as a rich Table."""
    from rich.table import Table

    f = fmt
    table = Table(title=f"{report.model.name} on {report.data.spec} ({report.data.images} images)")
    for col in ("variant", "runtime", "top-1 %", "drop", "agreement %", "KL", "p50 ms", "p90 ms", "speedup",
                "size MB", "pick"):
        table.add_column(col, justify="left" if col in ("variant", "runtime") else "right", no_wrap=True)
    for v in report.variants:
        table.add_row(v.name, v.runtime, f(v.top1), f(v.top1_drop), f(v.agreement), f(v.kl, 4), f(v.latency_ms_p50),
                      f(v.latency_ms_p90), f(v.speedup, 2, "x"), f(v.size_mb, 1), "*" if v.selected else "")
    captions = []
    selection = report.selection
    if selection and selection.selected:
        captions.append(f"pick * = {selection.rule}")
    not_timed = report.benchmark.not_timed
    if not_timed:
        simulations = {v.runtime for v in report.variants if runtime_info(v.runtime).simulates}
        explained = "".join(f" ({name} = {runtime_info(name).description})" for name in sorted(simulations))
        captions.append(f"not timed: {', '.join(not_timed)}" + explained)
    table.caption = "\n".join(captions) or None
    return table


def selection_line(report: RunReport) -> str | None:
    """One line naming the variant to deploy, or why there is none."""
    selection = report.selection
    if selection is None or not selection.candidates:
        return None
    row = report.selected
    if row is None:
        return f"no candidate holds the accuracy budget ({budget_text(selection.max_drop)})"
    return (f"selected: {row.name} in {row.runtime} ({row.artifact}), {fmt(row.speedup, 2, 'x')} "
            f"over PyTorch FP32, {selection.rule}")


def layer_tables(layers: LayerReport) -> list:
    """`benchmark --layers`: time by kind of layer and precision, by operator, then the slowest layers, as rich
    Tables."""
    from rich.table import Table

    kinds = Table(title=f"{layers.layers} layers in {layers.runtime}, {fmt(layers.total_ms, 3)} ms "
                        f"(medians of {layers.rounds} profiled calls)")
    for col in ("kind", "precision", "layers", "ms", "time %", "GMACs", "GOP/s"):
        kinds.add_column(col, justify="left" if col in ("kind", "precision") else "right", no_wrap=True)
    for g in layers.groups:
        kinds.add_row(g.kind, "int8" if g.int8 else "float", str(g.layers), fmt(g.ms, 3),
                      fmt(100 * g.time_share, 1), fmt(g.gmacs, 4), fmt(g.gops, 1))
    operators = Table(title=f"the {len(layers.operators)} operators that took the most time")
    for col in ("operator", "precision", "layers", "ms", "time %"):
        operators.add_column(col, justify="left" if col in ("operator", "precision") else "right", no_wrap=True)
    for op in layers.operators:
        operators.add_row(op.op, "int8" if op.int8 else "float", str(op.layers), fmt(op.ms, 3),
                          fmt(100 * op.time_share, 1))
    slowest = Table(title=f"the {len(layers.slowest)} slowest layers")
    for col in ("layer", "operator", "kind", "precision", "ms", "GOP/s"):
        slowest.add_column(col, justify="right" if col in ("ms", "GOP/s") else "left",
                           no_wrap=col != "layer", overflow="fold")
    for layer in layers.slowest:
        slowest.add_row(layer.name, layer.op, layer.kind, "int8" if layer.int8 else "float",
                        fmt(layer.ms, 3), fmt(layer.gops, 1))
    return [kinds, operators, slowest]


def int8_payoff_table(runtime: str, against: Int8Report):
    """`benchmark --layers` of an INT8 artifact beside its float one: per operator type, whether INT8 paid here."""
    from rich.table import Table

    table = Table(title=f"INT8 against float in {runtime}, per operator type: {fmt(against.int8_total_ms, 3)} "
                        f"vs {fmt(against.float_total_ms, 3)} ms (profiled in alternating passes)")
    for col in ("operator", "kind", "float ms", "INT8 ms", "saved ms", "INT8"):
        table.add_column(col, justify="left" if col in ("operator", "kind") else "right", no_wrap=True)
    for row in against.operators:
        table.add_row(row.op, row.kind, fmt(row.float_ms, 3), fmt(row.int8_ms, 3), fmt(row.saved_ms, 3), row.verdict)
    return table


def int8_gemm_line(layers: LayerReport) -> str:
    """The INT8 GEMM layers against this CPU's measured INT8 GEMM roofline, in one line."""
    gemm = layers.int8_gemm
    if not gemm.layers:
        return f"INT8 GEMMs: none ran in INT8 in {layers.runtime}"
    share = gemm.roofline_share
    roofline = ("no INT8 GEMM roofline measured for this runtime" if share is None else
                f"{100 * share:.0f}% of this CPU's INT8 GEMM roofline in {layers.runtime} "
                f"({fmt(gemm.roofline_gops, 1)} GOP/s, edgevision device)")
    return (f"INT8 GEMMs: {gemm.layers} layers, {100 * gemm.time_share:.0f}% of the time, "
            f"{fmt(gemm.gops, 1)} GOP/s: {roofline}")
