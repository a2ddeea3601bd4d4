"""The ONNX Runtime graph fusions edgevision applies itself to a Q/DQ graph, where an ONNX Runtime session leaves the
pattern unfused (the results use ONNX Runtime's contributed operators, so they run in ONNX Runtime only), and the
clean-up of dead Q/DQ nodes that they and edgevision's other Q/DQ graph edits share."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

FLOAT = 1  # onnx.TensorProto.FLOAT, without importing onnx here


def fuse_tanh_gelu(src: Path, dst: Path) -> int:
    """Write `src` with each tanh-approximated GELU (0.5x(1 + tanh(...)), eight elementwise nodes as exported) as
    one FastGelu node, by ONNX Runtime's transformer optimizer with its GELU fusions alone; returns how many
    FastGelu nodes `dst` has. An ONNX Runtime session fuses the erf form of GELU itself but not this one (MaxViT's
    45 GELUs). The graph's Q/DQ nodes are left as they are."""
    import logging

    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    options = FusionOptions("bert")
    for name in vars(options):
        if name.startswith("enable_") and name != "enable_gelu":
            setattr(options, name, False)
    quiet = logging.getLogger("onnxruntime.transformers")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # "Model producer not matched": it expects a BERT export
    try:
        fused = optimize_model(str(src), model_type="bert", optimization_options=options, opt_level=0)
    finally:
        quiet.setLevel(level)
    fused.save_model_to_file(str(dst))
    return sum(node.op_type == "FastGelu" for node in fused.model.graph.node)


def fuse_matmul_bias(src: Path, dst: Path) -> int:
    """Write `src` with each DequantizeLinear(activations), DequantizeLinear(constant weights) -> MatMul -> Add
    (constant bias, float or dequantized) as one MatMulIntegerToFloat that adds the bias itself; returns how many.
    An ONNX Runtime session makes MatMulIntegerToFloat of the Q/DQ MatMul without its bias input and leaves the
    Add apart (ViT-B: 48 of them, each one more pass over the layer's output); its own bias fusion matches only
    the MatMulInteger form. The arithmetic is the session's own: the outputs do not change."""
    import onnx
    from onnx import helper

    model = onnx.load(str(src))
    graph = _Graph(model.graph)
    matches = [m for m in map(graph.matmul_bias, model.graph.node) if m]
    replaced = {id(m.add): m.node for m in matches}  # each fused node takes its Add's place, after all it reads
    fused_away = {id(m.matmul) for m in matches}
    nodes = [replaced.get(id(node), node) for node in model.graph.node if id(node) not in fused_away]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    model.graph.initializer.extend(graph.new_constants.values())
    drop_unused_qdq(model)  # the DQs (and their constants) that only the fused MatMuls and Adds read
    if matches and not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    onnx.save(model, str(dst))
    return len(matches)


def fused_matmul_biases(path: Path) -> int:
    """How many MatMulIntegerToFloat nodes of the graph at `path` add a bias (fuse_matmul_bias wrote them: ONNX
    Runtime's quantizer writes none)."""
    import onnx

    return sum(node.op_type == "MatMulIntegerToFloat" and len(node.input) > 6 and bool(node.input[6])
               for node in onnx.load(str(path), load_external_data=False).graph.node)


@dataclass
class _MatMulBias:
    node: Any  # the MatMulIntegerToFloat NodeProto
    matmul: Any
    add: Any
    dequantizers: list[Any]  # what the MatMul and Add read through: activations, weights, a quantized bias


class _Graph:
    """Who makes and who reads each tensor of a GraphProto, and its constants."""

    def __init__(self, graph):
        self.constants = {init.name: init for init in graph.initializer}
        self.new_constants: dict[str, Any] = {}  # float biases dequantized here
        self.producers = {out: node for node in graph.node for out in node.output}
        self.readers: dict[str, list] = {out.name: [None] for out in graph.output}  # a graph output is a reader
        for node in graph.node:
            for name in node.input:
                self.readers.setdefault(name, []).append(node)

    def matmul_bias(self, matmul) -> _MatMulBias | None:
        """The fused node for one MatMul, or None unless it is DQ(activations, per tensor) x DQ(2-D constant
        weights, per tensor or per output column) read only by an Add of a constant bias, one value per column."""
        from onnx import helper

        if matmul.op_type != "MatMul" or len(self.readers.get(matmul.output[0], [])) != 1:
            return None
        add, (a, b) = self.readers[matmul.output[0]][0], (self.producers.get(name) for name in matmul.input)
        if add is None or add.op_type != "Add" or not all(dq and dq.op_type == "DequantizeLinear" for dq in (a, b)):
            return None
        weight, others = self.constants.get(b.input[0]), [name for name in add.input if name != matmul.output[0]]
        if weight is None or len(weight.dims) != 2 or len(others) != 1:
            return None
        bias, bias_dq = self._float_bias(others[0], columns=weight.dims[1])
        if bias is None or not (self._per_tensor(a) and self._per_column(b, columns=weight.dims[1])):
            return None
        inputs = [a.input[0], b.input[0], a.input[1], b.input[1], _zero_point(a), _zero_point(b), bias]
        node = helper.make_node("MatMulIntegerToFloat", inputs, [add.output[0]], name=f"{add.output[0]}_fused",
                                domain="com.microsoft")
        return _MatMulBias(node, matmul, add, [a, b, *bias_dq])

    def _float_bias(self, name: str, columns: int) -> tuple[str | None, list]:
        """(`name`, []) when it is a float32 constant of `columns` values; when it is a DequantizeLinear of
        constants (ONNX Runtime's quantizer writes some biases in int32), a float32 constant of the values that
        node computes, added to the graph once, and that node; else (None, [])."""
        from onnx import numpy_helper

        if name in self.constants:
            bias = self.constants[name]
            return (name if bias.data_type == FLOAT and list(bias.dims) == [columns] else None), []
        dequantize = self.producers.get(name)
        if dequantize is None or dequantize.op_type != "DequantizeLinear" or not all(
                input in self.constants for input in dequantize.input if input):
            return None, []
        values = dequantized(dequantize, self.constants)
        if values.shape != (columns,):
            return None, []
        float_name = f"{name}_float"
        self.new_constants.setdefault(float_name, numpy_helper.from_array(values, float_name))
        return float_name, [dequantize]

    def _per_tensor(self, dequantize) -> bool:
        scale = self.constants.get(dequantize.input[1])
        return scale is not None and len(scale.dims) == 0

    def _per_column(self, dequantize, columns: int) -> bool:
        scale = self.constants.get(dequantize.input[1])
        axis = next((attr.i for attr in dequantize.attribute if attr.name == "axis"), 1)
        return scale is not None and (len(scale.dims) == 0 or (list(scale.dims) == [columns] and axis in (1, -1)))


def dequantized(dequantize, constants: dict) -> np.ndarray:
    """What a DequantizeLinear of constants (name -> TensorProto) computes, as ONNX Runtime computes it: the
    integer difference to the zero point, then float32 times the scale (per tensor, or per channel along its
    axis)."""
    from onnx import numpy_helper

    values = numpy_helper.to_array(constants[dequantize.input[0]]).astype(np.int64)
    scale = numpy_helper.to_array(constants[dequantize.input[1]]).astype(np.float32)
    zero = (numpy_helper.to_array(constants[dequantize.input[2]]).astype(np.int64)
            if len(dequantize.input) > 2 and dequantize.input[2] else np.zeros(scale.shape, np.int64))
    if scale.ndim == 1 and scale.size > 1:  # per channel along the DequantizeLinear's axis
        axis = next((a.i for a in dequantize.attribute if a.name == "axis"), 1) % values.ndim
        shape = [1] * values.ndim
        shape[axis] = scale.size
        scale, zero = scale.reshape(shape), zero.reshape(shape)
    return ((values - zero).astype(np.float32) * scale).astype(np.float32)


def drop_unused_qdq(model) -> None:
    """Remove the QuantizeLinear and DequantizeLinear nodes nothing reads (and, in turn, those only they read),
    then the initializers nothing reads: the graph holds no dead INT8 ops. Subgraphs (If, Loop, Scan) count as
    readers, and so do the graph's inputs and outputs."""
    graph = model.graph
    ends = {value.name for value in (*graph.output, *graph.input)}
    while True:
        read = _names_read(graph.node) | ends
        dead = [node for node in graph.node if node.op_type in ("QuantizeLinear", "DequantizeLinear")
                and not any(name in read for name in node.output)]
        if not dead:
            break
        for node in dead:
            graph.node.remove(node)
    read = _names_read(graph.node) | ends
    for init in [init for init in graph.initializer if init.name not in read]:
        graph.initializer.remove(init)


def _names_read(nodes) -> set[str]:
    """Every tensor name the nodes read, those of their subgraphs (If, Loop, Scan) included."""
    names = set()
    for node in nodes:
        names.update(name for name in node.input if name)
        for attribute in node.attribute:
            for subgraph in (*([attribute.g] if attribute.HasField("g") else []), *attribute.graphs):
                names |= _names_read(subgraph.node)
    return names


def _zero_point(dequantize) -> str:
    return dequantize.input[2] if len(dequantize.input) > 2 else ""
