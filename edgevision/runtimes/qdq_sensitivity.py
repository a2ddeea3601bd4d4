"""Which quantized nodes of a Q/DQ graph cost the most accuracy: each node is given its float inputs back in a
copy of the graph (its float weight from the float graph, found by node name and input position; its
activation read before the Q/DQ), with every other node's scales as calibrated, and the copy is run on the
same images. One calibration serves every
node, so a ranking costs one ONNX Runtime session per node rather than one quantization per node.
"""
from __future__ import annotations

import copy
from typing import Callable, Sequence

import numpy as np

from edgevision.runtimes.onnxruntime import drop_unused_qdq

Metric = Callable[[object], float]  # an onnx.ModelProto -> its metric on the guard's images


def quantized_nodes(model) -> list[str]:
    """The nodes that read a DequantizeLinear output (an INT8 weight or activation), in graph order."""
    producers = {out: node for node in model.graph.node for out in node.output}
    return [n.name for n in model.graph.node if n.op_type not in ("QuantizeLinear", "DequantizeLinear")
            and any(i in producers and producers[i].op_type == "DequantizeLinear" for i in n.input)]


def with_float_inputs(model, names: Sequence[str], float_model=None):
    """A copy of `model` in which the named nodes read float tensors instead of their Q/DQ inputs: the float
    graph's weights where `float_model` has the node, else the INT8 weights dequantized."""
    model = copy.deepcopy(model)
    graph, wanted = model.graph, set(names)
    producers = {out: node for node in graph.node for out in node.output}
    constants = {i.name: i for i in graph.initializer}
    originals = _float_weights(float_model) if float_model is not None else {}
    for node in (n for n in graph.node if n.name in wanted):
        for i, name in enumerate(node.input):
            dq = producers.get(name)
            if dq is None or dq.op_type != "DequantizeLinear":
                continue
            if dq.input[0] in constants:  # an INT8 weight: the float tensor it was made from
                node.input[i] = _float_weight(graph, constants, originals.get((node.name, i)), dq)
            elif dq.input[0] in producers and producers[dq.input[0]].op_type == "QuantizeLinear":
                node.input[i] = producers[dq.input[0]].input[0]
    drop_unused_qdq(model)
    return model


def _float_weights(float_model) -> dict[tuple[str, int], object]:
    """(node name, input position) -> the float graph's initializer there (through Identity, the exporter's
    shared weights)."""
    inits = {i.name: i for i in float_model.graph.initializer}
    for node in float_model.graph.node:
        if node.op_type == "Identity" and node.input[0] in inits:
            inits[node.output[0]] = inits[node.input[0]]
    return {(n.name, i): inits[x] for n in float_model.graph.node for i, x in enumerate(n.input) if x in inits}


def _float_weight(graph, constants, original, dq) -> str:
    """The name of a float initializer for a weight input, added to the graph when it is not there yet."""
    from onnx import numpy_helper

    name = f"{dq.input[0]}_float"
    if name not in constants:
        values = numpy_helper.to_array(original) if original is not None else _dequantized(dq, constants)
        constants[name] = numpy_helper.from_array(values.astype(np.float32), name)
        graph.initializer.append(constants[name])
    return name


def _dequantized(dq, constants) -> np.ndarray:
    from onnx import numpy_helper

    values = numpy_helper.to_array(constants[dq.input[0]]).astype(np.float32)
    scale = numpy_helper.to_array(constants[dq.input[1]]).astype(np.float32)
    zero = (numpy_helper.to_array(constants[dq.input[2]]).astype(np.float32)
            if len(dq.input) > 2 and dq.input[2] else np.zeros_like(scale))
    if scale.ndim == 1 and scale.size > 1:  # per-channel along the DequantizeLinear's axis
        axis = next((a.i for a in dq.attribute if a.name == "axis"), 1) % values.ndim
        shape = [1] * values.ndim
        shape[axis] = scale.size
        scale, zero = scale.reshape(shape), zero.reshape(shape)
    return ((values - zero) * scale).astype(np.float32)


def rank_by_sensitivity(model, metric: Metric, float_model=None) -> list[tuple[str, float]]:
    """(node, metric with that node in float), the most accuracy restored first."""
    scored = [(name, metric(with_float_inputs(model, [name], float_model))) for name in quantized_nodes(model)]
    return sorted(scored, key=lambda item: -item[1])
