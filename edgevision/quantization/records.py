"""What a quantization did, as types: the report's `quantization` record of an INT8 variant and the path its
accuracy guard took. `typed.to_data` writes them into report.json; a key that only some runs have (a guard
that stopped, a Model Optimizer version) is left out when it was not set.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from edgevision.quantization.openvino import NNCFSettings
from edgevision.quantization.placement import Placement
from edgevision.runtimes.fp16_preflight import Fp16Report
from edgevision.typed import flattened, omitted


@dataclass
class GuardStep:
    """One quantization the guard tried and measured."""

    step: str
    int8: float  # the budget's measure on the guard's images
    calibration_images: int
    seconds: float | None  # None for the graph as first quantized (timed by the run, not the guard)
    settings: NNCFSettings | None = omitted()  # OpenVINO: NNCF's settings of this step
    excluded: list[str] | None = omitted()  # Q/DQ: the nodes left in float
    kl: float | None = omitted()  # Q/DQ: mean KL of the softmax against the float graph


@dataclass
class RankedNode:
    node: str
    kl_with_only_it_int8: float


@dataclass
class GuardRanking:
    """How the Q/DQ guard ranked the quantized nodes (quantization/sensitivity.py)."""

    seconds: float
    images: int
    measure: str
    nodes: int
    top: list[RankedNode]


@dataclass
class GuardSummary:
    """The path an accuracy guard took: the plain INT8 measure, then each step tried, and what it kept."""

    metric: str  # top1 (labelled data) or agreement (with the float model)
    max_drop: float
    images: int
    float: float
    plain_int8: float
    needed: bool  # plain INT8 missed the budget
    path: list[GuardStep] = field(default_factory=list)
    ranking: GuardRanking | None = omitted()
    ladder_stopped: str | None = omitted()
    gave_up: str | None = omitted()
    stopped: str | None = omitted()  # the guards' time ran out
    seconds: float | None = omitted()
    settings: NNCFSettings | None = omitted()  # OpenVINO: the settings kept
    excluded_nodes: list[str] | None = omitted()  # Q/DQ: the nodes left in float
    calibration_images: int | None = omitted()
    calibration_method: str | None = omitted()
    controlled_int8: float | None = omitted()  # NNCF accuracy control's measure
    kept: str | None = omitted()  # the step whose model was kept
    final_int8: float | None = omitted()
    held: bool | None = omitted()

    def holds(self, metric: float) -> bool:
        return self.float - metric <= self.max_drop


@dataclass
class NNCFRecord:
    """An OpenVINO INT8 model made by NNCF."""

    settings: NNCFSettings
    fake_quantize_ops: int
    layers_returned_to_float: list[str] = field(default_factory=list)
    accuracy_control: GuardSummary | None = omitted()
    int8_layers_executed: int | None = omitted()  # in OpenVINO's runtime graph on this CPU
    inference_precision: str | None = omitted()  # the runner's precision hint (bf16 on AMX CPUs)
    placement: Placement | None = omitted()  # latency-aware: each class of layer, float vs INT8 here


@dataclass
class QDQRecord:
    """An INT8 Q/DQ ONNX graph, by ONNX Runtime's quantizer or Model Optimizer."""

    profile: str
    activations: str
    weights: str
    calibration_method: str
    calibration_images: int
    quantize_linear_ops: int
    dequantize_linear_ops: int
    quantized_op_types: list[str] | str  # the op types asked for, or the engine's default
    excluded_nodes: list[str] = field(default_factory=list)
    engine: str | None = omitted()  # the Q/DQ engine (jetson)
    modelopt_version: str | None = omitted()
    float_inputs_restored: list[str] | None = omitted()
    format: str | None = omitted()  # the CPU format (u8s8, u8s8-rr, s8s8)
    placement: Placement | None = omitted()  # latency-aware: each class of layer, float vs INT8 here
    accuracy_guard: GuardSummary | None = omitted()


@dataclass
class TensorRTGraphRecord:
    """The jetson target's model.onnx: its Q/DQ quantization (INT8) with its keys in place, the FP16 pre-flight of
    its float layers, and how it runs here (an INT8 graph only as a simulation of the engine)."""

    simulated: bool
    engine_precision: str  # the engine build_engine.sh makes: int8, fp16, fp32
    qdq: QDQRecord | None = flattened()
    fp16_preflight: Fp16Report | None = omitted()


QuantizationRecord = NNCFRecord | QDQRecord | TensorRTGraphRecord
