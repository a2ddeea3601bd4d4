"""The typed rows `compare` reads back from runs, and a comparison: its rows with their caveats."""
from __future__ import annotations

from dataclasses import dataclass, field

from edgevision.runtimes import RUNTIMES


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
    pareto: bool = False  # on its model's own frontier
    selected: bool = False  # the variant its run selected to deploy (pipeline/selection.py)
    # top-1 points lost with labels; agreement points lost (100 - agreement) without
    accuracy_drop: float = field(init=False)

    def __post_init__(self):
        self.accuracy_drop = self.drop if self.drop is not None else 100.0 - self.agreement

    @property
    def accuracy(self) -> float:
        return self.top1 if self.top1 is not None else self.agreement

    @property
    def kind(self) -> str:
        """fp32, int8, pruned (in any float runtime) or pruned + int8: what the plot's marker shows."""
        pruned, int8 = self.variant.startswith("pruned"), "int8" in self.variant
        return {(True, True): "pruned + int8", (True, False): "pruned", (False, True): "int8"}.get((pruned, int8), "fp32")

    @property
    def runtime_short(self) -> str:
        info = RUNTIMES.get(self.runtime)
        return info.short if info and info.short else self.runtime


@dataclass
class Comparison:
    """The rows of the compared runs and the caveats that go with every view of them."""
    rows: list[Row]
    caveats: list[str] = field(default_factory=list)

    @property
    def labelled(self) -> bool:
        return all(r.top1 is not None for r in self.rows)
