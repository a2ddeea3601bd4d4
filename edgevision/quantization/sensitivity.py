"""Which quantized nodes of a Q/DQ graph cost the most accuracy, one at a time: a copy of the graph in which
only that node stays quantized and every other node reads float inputs (its float weight from the float graph,
found by node name and input position; its activation unrounded: the Q/DQ pair becomes a Clip to the range it
can represent, since ONNX Runtime folds a ReLU into an unsigned Q/DQ and drops the ReLU node) is run on the
same images. One calibration serves every node, so a ranking costs one ONNX Runtime session per node rather
than one quantization per node. (Giving one node float inputs in the otherwise quantized graph ranks worse:
when two nodes break INT8 together, neither alone restores anything.)
"""
from __future__ import annotations

import copy
import time
from typing import Callable, Sequence

import numpy as np

from edgevision.runtimes.ort_fusions import dequantized, drop_unused_qdq
from edgevision.runtimes.tensorrt import graph_constants

Damage = Callable[[object], float]  # an onnx.ModelProto -> how far its outputs are from the float graph's

# What the ranking ranks: nodes that compute on INT8 inputs. Shape arithmetic, casts and data movement can read a
# dequantized tensor too (timm's same-padding reads the input's Shape, then Div/Sub on it) but cost nothing to
# quantize and never hold accuracy back.
COMPUTE_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul", "Add", "Sub", "Mul", "Div", "Relu", "Clip",
                         "Sigmoid", "HardSigmoid", "HardSwish", "LeakyRelu", "Softmax", "MaxPool", "AveragePool",
                         "GlobalAveragePool", "Concat", "Resize", "LayerNormalization", "InstanceNormalization",
                         "Gelu", "Erf", "Tanh", "Pow", "Sqrt", "ReduceMean", "Where"})
SHAPE_SOURCES = frozenset({"Shape", "Size"})


def quantized_nodes(model) -> list[str]:
    """The nodes that read a DequantizeLinear output (an INT8 weight or activation), in graph order."""
    producers = {out: node for node in model.graph.node for out in node.output}
    return [n.name for n in model.graph.node if n.op_type not in ("QuantizeLinear", "DequantizeLinear")
            and any(i in producers and producers[i].op_type == "DequantizeLinear" for i in n.input)]


def rankable_nodes(model) -> list[str]:
    """The quantized nodes worth ranking, in graph order: compute ops (COMPUTE_OPS) on data, i.e. with an input
    that derives from the graph's input other than through its shape (Shape, Size)."""
    constants = {t.name for t in model.graph.initializer}
    data = {i.name for i in model.graph.input} - constants
    for node in model.graph.node:  # ONNX keeps nodes in topological order
        if node.op_type not in SHAPE_SOURCES and any(i in data for i in node.input):
            data.update(node.output)
    nodes = {n.name: n for n in model.graph.node}
    return [name for name in quantized_nodes(model)
            if nodes[name].op_type in COMPUTE_OPS and any(i in data for i in nodes[name].input)]


def with_float_inputs(model, names: Sequence[str], float_model=None):
    """A copy of `model` in which the named nodes read float tensors instead of their Q/DQ inputs: the float
    graph's weights where `float_model` has the node, else the INT8 weights dequantized."""
    model = copy.deepcopy(model)
    graph, wanted = model.graph, set(names)
    producers = {out: node for node in graph.node for out in node.output}
    constants = {i.name: i for i in graph.initializer}
    originals = _float_weights(float_model) if float_model is not None else {}
    clips: dict[str, tuple] = {}
    for node in (n for n in graph.node if n.name in wanted):
        for i, name in enumerate(node.input):
            dq = producers.get(name)
            if dq is None or dq.op_type != "DequantizeLinear":
                continue
            if dq.input[0] in constants:  # an INT8 weight: the float tensor it was made from
                node.input[i] = _float_weight(graph, constants, originals.get((node.name, i)), dq)
            elif dq.input[0] in producers and producers[dq.input[0]].op_type == "QuantizeLinear":
                node.input[i] = _unrounded(graph, constants, producers[dq.input[0]], clips)
    for position, clip in sorted(clips.values(), key=lambda c: -c[0]):  # each Clip right after its source
        graph.node.insert(position, clip)
    drop_unused_qdq(model)
    return model


def _unrounded(graph, constants, q, clips: dict) -> str:
    """The output name of a Clip of q's input to the range q represents (scale, zero point, INT8 or UINT8),
    created once per QuantizeLinear and placed right after it; q's position marks where."""
    from onnx import TensorProto, helper, numpy_helper

    out = f"{q.output[0]}_unrounded"
    if out not in clips:
        scale = float(numpy_helper.to_array(constants[q.input[1]]))
        zp = constants.get(q.input[2]) if len(q.input) > 2 and q.input[2] else None
        signed = zp is not None and zp.data_type == TensorProto.INT8
        zero = float(numpy_helper.to_array(zp)) if zp is not None else 0.0
        low, high = ((-128, 127) if signed else (0, 255))
        names = (f"{out}_min", f"{out}_max")
        for name, bound in zip(names, ((low - zero) * scale, (high - zero) * scale)):
            graph.initializer.append(numpy_helper.from_array(np.array(bound, np.float32), name))
        position = list(graph.node).index(q) + 1
        clips[out] = (position, helper.make_node("Clip", [q.input[0], *names], [out], name=out))
    return out


def _float_weights(float_model) -> dict[tuple[str, int], object]:
    """(node name, input position) -> the float graph's constant there (tensorrt.graph_constants: initializers,
    Constant nodes, and Identity of either, the exporter's shared weights)."""
    inits = graph_constants(float_model.graph)
    return {(n.name, i): inits[x] for n in float_model.graph.node for i, x in enumerate(n.input) if x in inits}


def _float_weight(graph, constants, original, dq) -> str:
    """The name of a float initializer for a weight input, added to the graph when it is not there yet."""
    from onnx import numpy_helper

    name = f"{dq.input[0]}_float"
    if name not in constants:
        values = _original_values(original, tuple(constants[dq.input[0]].dims))
        values = values if values is not None else dequantized(dq, constants)
        constants[name] = numpy_helper.from_array(values.astype(np.float32), name)
        graph.initializer.append(constants[name])
    return name


def _original_values(original, shape: tuple[int, ...]) -> np.ndarray | None:
    """The float graph's weight laid out as the quantized one, or None when there is none or it cannot be.
    ONNX Runtime's pre-processing can move an elementwise op across a Transpose and permute its constant with
    it (ConvNeXt's layer scale: 1x32x1x1 in the float graph, 1x1x1x32 quantized): a move of unit axes is a
    reshape; any other change leaves the caller the INT8 weight, dequantized."""
    from onnx import numpy_helper

    if original is None:
        return None
    values = numpy_helper.to_array(original)
    if values.shape == shape:
        return values
    same_order = tuple(d for d in values.shape if d != 1) == tuple(d for d in shape if d != 1)
    return values.reshape(shape) if same_order else None


class RankingOutOfTime(Exception):
    """The ranking passed its deadline; `ranked` is how many nodes it had scored."""

    def __init__(self, ranked: int, total: int):
        super().__init__(f"{ranked} of {total} nodes ranked")
        self.ranked, self.total = ranked, total


def rank_by_sensitivity(model, damage: Damage, float_model=None, deadline: float | None = None
                        ) -> list[tuple[str, float]]:
    """(node, damage with only that node quantized), the most damaging first, over rankable_nodes(); every other
    quantized node reads float inputs. `damage` is a continuous measure (KL divergence from the float graph's
    outputs), which tells nodes apart where top-1 on a few images ties. Past `deadline` (time.perf_counter())
    it raises RankingOutOfTime."""
    names, rankable = quantized_nodes(model), rankable_nodes(model)
    scored = []
    for name in rankable:
        if deadline is not None and time.perf_counter() > deadline:
            raise RankingOutOfTime(len(scored), len(rankable))
        scored.append((name, damage(with_float_inputs(model, [n for n in names if n != name], float_model))))
    return sorted(scored, key=lambda item: -item[1])
