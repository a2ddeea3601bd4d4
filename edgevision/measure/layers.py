"""Where a model's time goes, layer by layer, and how close its INT8 GEMMs come to the CPU's roofline.

A whole model's GOPs over its latency mixes the GEMMs with everything that is not one (LayerNorm, softmax,
depthwise convolutions, reorders): a maxvit_t at 42% of the INT8 GEMM roofline says little about its GEMMs.
The runtime's own profiler times each layer as it ran (fused, in its kernel's precision); the layers that
are GEMMs (convolutions with several input channels per output, fully connected layers, matrix multiplies)
are summed apart, and their GOP/s is set against the CPU profile's measured INT8 GEMM throughput for that
runtime. A profiled call runs a little slower than an unprofiled one, so the shares are a lower bound.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from edgevision.runtimes import Runner
from edgevision.runtimes.layers import ATTENTION, DEPTHWISE, GEMM, OTHER, LayerTime
from edgevision.typed import omitted

SLOWEST = 10  # layers listed by name
OPERATORS = 10  # operator types listed by their summed time


@dataclass
class LayerGroup:
    """The layers of one kind (GEMM, attention, depthwise, other) in one precision, summed."""

    kind: str
    int8: bool
    layers: int
    ms: float
    time_share: float
    gmacs: float
    gops: float | None


@dataclass
class OperatorTime:
    """The layers of one operator type (the runtime's, without its kernel) in one precision, summed."""

    op: str
    int8: bool
    layers: int
    ms: float
    time_share: float


@dataclass
class GemmShare(LayerGroup):
    """The INT8 GEMM layers against this CPU's measured INT8 GEMM roofline for the runtime."""

    roofline_gops: float | None = None
    roofline_share: float | None = None


@dataclass
class SlowLayer:
    name: str
    op: str
    kind: str
    int8: bool
    macs: int
    ms: float
    gops: float | None


@dataclass
class LayerReport:
    """`benchmark --layers`: where the time went, by kind and precision, by operator, and the slowest layers;
    for an INT8 artifact beside its float one, per operator type whether INT8 paid (`int8_vs_float`)."""

    runtime: str
    rounds: int
    layers: int
    total_ms: float
    groups: list[LayerGroup]
    operators: list[OperatorTime]
    int8_gemm: GemmShare
    slowest: list[SlowLayer]
    int8_vs_float: Int8Report | None = omitted()


@dataclass
class LayerProfile:
    runtime: str
    rounds: int
    layers: list[LayerTime]

    @property
    def total_ms(self) -> float:
        return sum(layer.ms for layer in self.layers)

    def share(self, ms: float) -> float:
        return round(ms / self.total_ms, 3) if self.total_ms else 0.0

    def group(self, kind: str, int8: bool) -> LayerGroup:
        """Count, time, share of the total time, GMACs and GOP/s of the layers of one kind and precision."""
        chosen = [layer for layer in self.layers if layer.kind == kind and layer.int8 == int8]
        ms, macs = sum(layer.ms for layer in chosen), sum(layer.macs for layer in chosen)
        return LayerGroup(kind, int8, len(chosen), round(ms, 3), self.share(ms), round(macs / 1e9, 4), gops(macs, ms))

    def groups(self) -> list[LayerGroup]:
        """Every kind and precision that ran, most time first."""
        rows = [self.group(kind, int8) for kind in (GEMM, ATTENTION, DEPTHWISE, OTHER) for int8 in (True, False)]
        return sorted((r for r in rows if r.layers), key=lambda r: -r.ms)

    def operators(self) -> list[OperatorTime]:
        """Time summed per operator type and precision (the runtime's operator, without its kernel), most time
        first: which operators an INT8 format leaves in float, or runs slowly, shows here."""
        summed: dict[tuple[str, bool], list[float]] = {}
        for layer in self.layers:
            summed.setdefault((layer.op.split(":")[0], layer.int8), []).append(layer.ms)
        rows = [OperatorTime(op, int8, len(times), round(sum(times), 3), self.share(sum(times)))
                for (op, int8), times in summed.items()]
        return sorted(rows, key=lambda r: -r.ms)[:OPERATORS]

    def int8_gemm_share(self, roofline_gops: float | None) -> float | None:
        """The INT8 GEMM layers' GOP/s as a share of the roofline, or None without either."""
        return roofline_share(self.group(GEMM, True).gops, roofline_gops)

    def report(self, roofline_gops: float | None = None) -> LayerReport:
        slowest = sorted(self.layers, key=lambda layer: -layer.ms)[:SLOWEST]
        gemm = self.group(GEMM, True)
        return LayerReport(self.runtime, self.rounds, len(self.layers), round(self.total_ms, 3), self.groups(),
                           self.operators(),
                           GemmShare(**vars(gemm), roofline_gops=roofline_gops,
                                     roofline_share=roofline_share(gemm.gops, roofline_gops)),
                           [SlowLayer(t.name, t.op, t.kind, t.int8, t.macs, round(t.ms, 4), gops(t.macs, t.ms))
                            for t in slowest])


# INT8's own cost: operators a float graph does not have (ONNX Runtime's Q/DQ, OpenVINO's FakeQuantize)
QUANTIZE_OPS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "FakeQuantize"}
QUANTIZE = "quantize/dequantize"
PAYOFF_NOISE = 0.05  # float and INT8 times of an operator within 5% of each other: neither paid


def float_op(op: str) -> str:
    """The float operator an INT8 operator stands for, without the runtime's kernel name (QLinearConv -> Conv,
    MatMulInteger -> MatMul, QGemm -> Gemm; Convolution:brgconv_avx2_I8 -> Convolution); QUANTIZE for INT8's
    own operators."""
    op = op.split(":")[0]
    if op in QUANTIZE_OPS:
        return QUANTIZE
    if op.startswith("QLinear"):
        return op[len("QLinear"):]
    if op in ("QGemm", "QAttention", "QEmbedLayerNormalization"):
        return op[1:]
    return op.removesuffix("Integer").removesuffix("QuantizedLegacy").removesuffix("Quantized")  # OpenVINO's FC


@dataclass
class Int8Payoff:
    """One operator type (and kind of work) in the float model and in its INT8 model, profiled side by side."""

    op: str  # the float operator; QUANTIZE for INT8's own quantize/dequantize operators
    kind: str
    float_ms: float
    int8_ms: float  # that operator's time in the INT8 model, whatever precision each of its layers ran in
    saved_ms: float = field(init=False)
    verdict: str = field(init=False)
    paid: bool = field(init=False)

    def __post_init__(self):
        self.saved_ms = round(self.float_ms - self.int8_ms, 3)
        self.verdict = self._verdict()
        self.paid = self.verdict == "paid"

    def _verdict(self) -> str:
        """paid (INT8 made these layers faster here), lost (slower), even (within PAYOFF_NOISE: profiled calls
        differ that much from run to run); cost for quantize/dequantize; float only / INT8 only for an operator
        one graph runs and the other does not (a fusion the float graph has and the INT8 graph lost: BiasGelu
        split into Erf, Mul, Add, Div around Q/DQ; OpenVINO's fused attention split into MatMul and Softmax)."""
        if self.op == QUANTIZE:
            return "cost"
        if not self.int8_ms or not self.float_ms:
            return "float only" if self.float_ms else "INT8 only"
        if abs(self.float_ms - self.int8_ms) <= PAYOFF_NOISE * max(self.float_ms, self.int8_ms):
            return "even"
        return "paid" if self.int8_ms < self.float_ms else "lost"


def int8_payoff(float_profile: LayerProfile, int8_profile: LayerProfile) -> list[Int8Payoff]:
    """Per operator type and kind, the float model's time against the INT8 model's, most time saved or lost
    first: where INT8 paid for itself on this CPU and where it did not (e.g. depthwise convolutions on AVX2)."""
    summed: dict[tuple[str, str], list[float]] = {}
    for which, profile in enumerate((float_profile, int8_profile)):
        for layer in profile.layers:
            op = float_op(layer.op)
            kind = OTHER if op == QUANTIZE else layer.kind
            summed.setdefault((op, kind), [0.0, 0.0])[which] += layer.ms
    rows = [Int8Payoff(op, kind, round(f, 3), round(i, 3)) for (op, kind), (f, i) in summed.items()]
    return sorted(rows, key=lambda r: -abs(r.float_ms - r.int8_ms))


@dataclass
class Int8Comparison:
    """An INT8 model's profile against its float model's, taken in alternating passes."""

    float_artifact: str
    float_profile: LayerProfile
    int8_profile: LayerProfile

    def report(self) -> Int8Report:
        return Int8Report(self.float_artifact, round(self.float_profile.total_ms, 3),
                          round(self.int8_profile.total_ms, 3), int8_payoff(self.float_profile, self.int8_profile))


@dataclass
class Int8Report:
    """Int8Comparison as `benchmark --layers` reports it."""

    float_artifact: str
    float_total_ms: float
    int8_total_ms: float
    operators: list[Int8Payoff]  # most time saved or lost first


def roofline_share(achieved_gops: float | None, roofline_gops: float | None) -> float | None:
    return round(achieved_gops / roofline_gops, 3) if achieved_gops and roofline_gops else None


def gops(macs: int, ms: float) -> float | None:
    """Two operations per multiply-accumulate, per second, in billions; None for layers without MACs."""
    return round(2 * macs / (ms / 1000) / 1e9, 1) if macs and ms > 0 else None


def profile_pair(first: Runner, second: Runner, input_shape: tuple[int, int, int], *, batch: int = 1,
                 rounds: int = 12, passes: int = 3, seed: int = 0) -> tuple[LayerProfile, LayerProfile]:
    """Two runners' per-layer profiles in alternating passes (first, second, first, ...), each layer's time the
    median over the passes: what else the machine does hits both alike, as in side-by-side latency timing."""
    x = np.random.default_rng(seed).standard_normal((batch, *input_shape), dtype=np.float32)
    per_pass = max(1, rounds // passes)
    runs: tuple[list[list[LayerTime]], list[list[LayerTime]]] = ([], [])
    for _ in range(passes):
        for runner, done in zip((first, second), runs):
            done.append(runner.layer_times(x, per_pass))
    return tuple(LayerProfile(r.runtime, per_pass * passes, _median_layers(done)) for r, done in zip((first, second), runs))


def _median_layers(passes: list[list[LayerTime]]) -> list[LayerTime]:
    """Each layer's median time over passes that profiled the same layers (the last pass alone if they differ)."""
    if any([layer.name for layer in p] != [layer.name for layer in passes[0]] for p in passes):
        return passes[-1]
    return [replace(layer, ms=float(np.median([p[i].ms for p in passes]))) for i, layer in enumerate(passes[0])]


def profile_layers(runner: Runner, input_shape: tuple[int, int, int], *, batch: int = 1, rounds: int = 10,
                   seed: int = 0) -> LayerProfile:
    """Each layer's median time over `rounds` profiled calls of `runner` on one random batch."""
    x = np.random.default_rng(seed).standard_normal((batch, *input_shape), dtype=np.float32)
    return LayerProfile(runner.runtime, rounds, runner.layer_times(x, rounds))
