"""INT8 where it pays on this CPU: an ONNX Runtime Q/DQ placement chosen from measured per-layer latency.

ONNX Runtime's default placement quantizes every operator it has an INT8 kernel or a Q/DQ rule for (Add, Mul,
Softmax, LayerNormalization, Transpose, ...): the quantize/dequantize pairs between them split the float graph's
fusions (GELU, LayerNorm) and cost time of their own. The latency-aware placement starts from the compute layers
alone (Conv, MatMul, Gemm), with the MatMul/Gemm outputs left in float (ONNX Runtime then runs them as
MatMulIntegerToFloat, its dequantize fused in), so everything else stays a float graph with its fusions. That
graph is profiled against the float graph on this CPU in alternating passes (measure/layers.profile_pair), and
each class of compute layer (dense convolutions, depthwise convolutions, weight matmuls, matmuls of two
activations) whose INT8 layers, their quantize/dequantize nodes counted, did not run clearly faster than its
float layers is left in float: depthwise convolutions where INT8 loses, attention matmuls whose two quantized
inputs cost what they save. A float island costs more than its own layers (layout reorders, quantize/dequantize
at its edges), and a class within the profiler's noise may go either way, so a placement that leaves a class in
float is timed whole against the one with every class in INT8, side by side, and the faster is kept.

OpenVINO (openvino_payoff): the same classes from the CPU plugin's layer types and its FakeQuantize layers; NNCF
leaves the classes that did not pay in float through its ignored scope.
"""
from __future__ import annotations

from dataclasses import dataclass

from edgevision.measure.layers import LayerProfile
from edgevision.typed import omitted

CLASSES = ("conv", "depthwise conv", "weight matmul", "activation matmul")
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear")
# how the quantizer and ONNX Runtime name a quantize/dequantize node after the tensor it converts
_TENSOR_SUFFIXES = ("_QuantizeLinear", "_DequantizeLinear", "_dq", "_q")
PAYOFF_MARGIN = 0.05  # INT8 kept where it is this much faster than float (profiled calls differ that much)


@dataclass
class ClassPayoff:
    """One class of compute layer, float against INT8 on this CPU, and the precision the placement keeps."""

    layer_class: str
    layers: int
    float_ms: float
    int8_ms: float  # its INT8 layers and the quantize/dequantize nodes of their tensors
    kept: str  # int8 or float


@dataclass
class Placement:
    """What the latency-aware placement measured and applied (a QDQRecord's `placement`)."""

    classes: list[ClassPayoff]  # per class, from the per-layer profiles
    float_classes: list[str]  # the classes left in float in the graph written
    timed_ms: dict[str, float] | None = None  # whole graphs side by side, when a class measured slower in INT8
    matmul_bias_fused: int | None = omitted()  # bias Adds taken into their INT8 MatMul (always: the same arithmetic)
    gelu_fused: int | None = omitted()  # tanh GELUs fused into FastGelu, when that timed faster whole
    gelu_approximated: int | None = omitted()  # erf GELUs computed in the tanh form by FastGelu, in the same check
    fusion_timed_ms: dict[str, float] | None = omitted()  # that check's medians, when the graph had GELUs
    attention_fused: int | None = omitted()  # self-attention blocks fused into MultiHeadAttention, when faster whole
    attention_timed_ms: dict[str, float] | None = omitted()  # that check's medians, when the graph had attention


def compute_classes(graph) -> dict[str, str]:
    """Each compute node of a float ONNX graph (onnx.GraphProto) by class."""
    constants = {init.name for init in graph.initializer}
    constants |= {out for node in graph.node if node.op_type == "Constant" for out in node.output}
    classes = {}
    for node in graph.node:
        if node.op_type == "Conv":
            group = next((a.i for a in node.attribute if a.name == "group"), 1)
            classes[node.name] = "depthwise conv" if group > 1 else "conv"
        elif node.op_type in ("MatMul", "Gemm"):
            weighted = any(name in constants for name in node.input[1:2])
            classes[node.name] = "weight matmul" if weighted else "activation matmul"
    return classes


def tensor_consumers(graph, classes: dict[str, str]) -> dict[str, list[str]]:
    """tensor name -> the compute nodes (names, keys of `classes`) that read it."""
    readers: dict[str, list[str]] = {}
    for node in graph.node:
        if node.name in classes:
            for name in node.input:
                readers.setdefault(name, []).append(node.name)
    return readers


def class_times(profile: LayerProfile, classes: dict[str, str], readers: dict[str, list[str]]) -> dict[str, float]:
    """Milliseconds per class in one profile: each layer matched to the compute node it runs (ONNX Runtime names
    a fused or converted node after its source node), each quantize/dequantize node to the compute nodes reading
    its tensor (shared evenly). Layers of neither kind are not counted."""
    by_length = sorted(classes, key=len, reverse=True)
    times = dict.fromkeys(CLASSES, 0.0)
    for layer in profile.layers:
        op = layer.op.split(":")[0]
        if op in QDQ_OPS:
            nodes = readers.get(_tensor_of(layer.name), [])
            for node in nodes:
                times[classes[node]] += layer.ms / len(nodes)
            continue
        node = next((n for n in by_length if layer.name.startswith(n)), None)
        if node is not None:
            times[classes[node]] += layer.ms
    return times


def _tensor_of(qdq_name: str) -> str:
    name = qdq_name.split("/duplicated")[0]
    for suffix in _TENSOR_SUFFIXES:
        if name.endswith(suffix):
            return name[:-len(suffix)]
    return name


def payoff_by_class(float_profile: LayerProfile, int8_profile: LayerProfile, graph) -> list[ClassPayoff]:
    """Per class present in the graph: float and INT8 time, and whether INT8 is kept (faster than float by more
    than PAYOFF_MARGIN; a class neither profile saw keeps INT8, one seen in INT8 alone goes float)."""
    classes = compute_classes(graph)
    readers = tensor_consumers(graph, classes)
    return _payoff(classes, class_times(float_profile, classes, readers), class_times(int8_profile, classes, readers))


def _payoff(classes: dict[str, str], fp: dict[str, float], q: dict[str, float]) -> list[ClassPayoff]:
    rows = []
    for name in CLASSES:
        count = sum(c == name for c in classes.values())
        if count:
            unseen = fp[name] == 0 and q[name] == 0  # e.g. attention OpenVINO fused into one layer
            kept = "int8" if unseen or q[name] < fp[name] * (1 - PAYOFF_MARGIN) else "float"
            rows.append(ClassPayoff(name, count, round(fp[name], 3), round(q[name], 3), kept))
    return rows


# OpenVINO: the CPU plugin's layer types, by class (a MatMul with constant weights runs as FullyConnected)
OPENVINO_LAYERS = {"Convolution": "conv", "GroupConvolution": "depthwise conv", "FullyConnected": "weight matmul",
                   "MatMul": "activation matmul"}
_OPENVINO_WEIGHT_PATH = ("Convert", "Transpose", "Reshape", "Multiply", "Subtract", "FakeQuantize")


def openvino_classes(ov_model) -> dict[str, str]:
    """Each compute op of an OpenVINO model (friendly name: what NNCF's ignored scope takes) by class."""
    classes = {}
    for op in ov_model.get_ops():
        kind = op.get_type_name()
        if kind in ("Convolution", "GroupConvolution"):
            classes[op.get_friendly_name()] = OPENVINO_LAYERS[kind]
        elif kind == "MatMul":
            weighted = _from_constant(op.input_value(1).get_node())
            classes[op.get_friendly_name()] = "weight matmul" if weighted else "activation matmul"
    return classes


def _from_constant(node) -> bool:
    """Whether a value comes from a constant through the ops a weight passes (decompression, layout, quantizer)."""
    while node.get_type_name() in _OPENVINO_WEIGHT_PATH:
        node = node.input_value(0).get_node()
    return node.get_type_name() == "Constant"


def openvino_payoff(float_profile: LayerProfile, int8_profile: LayerProfile, fp32_model, int8_model
                    ) -> list[ClassPayoff]:
    """payoff_by_class for OpenVINO: each profiled layer by the plugin's layer type, each FakeQuantize the
    plugin ran on its own (named after it) to the compute ops reading it (shared evenly)."""
    classes = openvino_classes(fp32_model)
    readers = {}
    for op in int8_model.get_ops():
        if op.get_type_name() == "FakeQuantize":
            targets = [t.get_node().get_friendly_name() for out in op.outputs() for t in out.get_target_inputs()]
            readers[op.get_friendly_name()] = [classes[name] for name in targets if name in classes]
    return _payoff(classes, _openvino_times(float_profile, readers), _openvino_times(int8_profile, readers))


def _openvino_times(profile: LayerProfile, readers: dict[str, list[str]]) -> dict[str, float]:
    times = dict.fromkeys(CLASSES, 0.0)
    for layer in profile.layers:
        layer_type = layer.op.split(":")[0]
        kind = next((c for t, c in OPENVINO_LAYERS.items() if layer_type.startswith(t)), None)
        if kind is not None:
            times[kind] += layer.ms
        for reader in readers.get(layer.name, []):
            times[reader] += layer.ms / len(readers[layer.name])
    return times


def float_nodes(graph, payoff: list[ClassPayoff]) -> list[str]:
    """The compute nodes of the classes the placement leaves in float."""
    left = {row.layer_class for row in payoff if row.kept == "float"}
    return sorted(name for name, cls in compute_classes(graph).items() if cls in left)
