"""The ONNX Runtime graph fusions edgevision applies itself, where an ONNX Runtime session leaves the pattern
unfused or runs it with a slower kernel (the results use ONNX Runtime's contributed operators, so they run in ONNX
Runtime only): to a Q/DQ graph (MatMul biases, GELUs) and to a float graph before it is quantized (self-attention);
and the clean-up of dead Q/DQ nodes that they and edgevision's other Q/DQ graph edits share."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgevision.runtimes.tensorrt import graph_constants

FLOAT = 1  # onnx.TensorProto.FLOAT, without importing onnx here
QDQ_NODES = ("QuantizeLinear", "DequantizeLinear")
# a fused float graph is kept when its outputs are within this share of their largest magnitude of the source's
# (float rounding: ViT-B's MultiHeadAttention graph differed by ~1e-6; a small Swin's fused with its attention bias
# left out, by 3% of it)
SAME_OUTPUTS = 1e-4


@dataclass(frozen=True)
class GeluFusion:
    """The GELUs `fuse_gelus` wrote as FastGelu nodes."""

    tanh: int  # tanh-approximated GELUs (MaxViT's): the same function
    erf: int  # erf GELUs (nn.GELU's default): computed in the tanh form, at most 4.7e-4 apart

    @property
    def total(self) -> int:
        return self.tanh + self.erf


def fuse_gelus(src: Path, dst: Path) -> GeluFusion:
    """Write `src` with each GELU as one FastGelu node, by ONNX Runtime's transformer optimizer with its GELU fusion
    and GELU approximation alone. A session fuses the erf form itself (into Gelu) but not the tanh form, exported
    as eight elementwise nodes (MaxViT's 45). FastGelu computes the tanh form, which differs from the erf form by at
    most 4.7e-4 (near |x| = 2.7; an INT8 step on a GELU's output is typically tens of times that): measured on an
    AVX2 CPU, its kernel took 4.3 ms for ConvNeXt-T's 18 GELUs where Gelu's took 6.2. The graph's Q/DQ nodes are
    left as they are."""
    import logging

    import onnx
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    options = FusionOptions("bert")
    for name in vars(options):
        if name.startswith("enable_"):
            setattr(options, name, name in ("enable_gelu", "enable_gelu_approximation"))
    quiet = logging.getLogger("onnxruntime.transformers")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # "Model producer not matched": it expects a BERT export
    model = onnx.load(str(src))
    before = [node.op_type for node in model.graph.node]  # the optimizer edits the model it is given
    try:
        fused = optimize_model(model, model_type="bert", optimization_options=options, opt_level=0)
    finally:
        quiet.setLevel(level)
    fused.save_model_to_file(str(dst))
    after = [node.op_type for node in fused.model.graph.node]
    erf = before.count("Erf") - after.count("Erf")
    return GeluFusion(after.count("FastGelu") - before.count("FastGelu") - erf, erf)


def fuse_matmul_bias(src: Path, dst: Path) -> int:
    """Write `src` with each DequantizeLinear(activations), DequantizeLinear(constant weights) -> MatMul -> Add
    (constant bias, float or dequantized) as one MatMulIntegerToFloat that adds the bias itself; returns how many.
    An ONNX Runtime session makes MatMulIntegerToFloat of the Q/DQ MatMul without its bias input and leaves the
    Add apart (ViT-B: 48 of them, each one more pass over the layer's output); its own bias fusion matches only
    the MatMulInteger form. The arithmetic is the session's own: the outputs do not change."""
    import onnx

    model = onnx.load(str(src))
    graph = _BiasMatcher(model.graph)
    matches = [m for m in map(graph.matmul_bias, model.graph.node) if m]
    replaced = {id(m.add): m.node for m in matches}  # each fused node takes its Add's place, after all it reads
    fused_away = {id(m.matmul) for m in matches}
    nodes = [replaced.get(id(node), node) for node in model.graph.node if id(node) not in fused_away]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    model.graph.initializer.extend(graph.new_constants.values())
    drop_unused_qdq(model)  # the DQs (and their constants) that only the fused MatMuls and Adds read
    if matches:
        _import_contrib_ops(model)
    onnx.save(model, str(dst))
    return len(matches)


def fuse_attention(src: Path, dst: Path, check: np.ndarray) -> int:
    """Write the float graph `src` with each self-attention of timm's form as one MultiHeadAttention (ONNX
    Runtime's fused kernel: scores, softmax and the weighted sum of the values per head, without the transposes,
    splits and scaling nodes around them); returns how many. timm's form, as exported (either attention path):
    qkv projection -> Reshape (B, N, 3, heads, head size) -> Transpose (2, 0, 3, 1, 4) -> q, k, v -> q (x scale)
    @ k^T (x scale) -> Softmax -> @ v -> Transpose (0, 2, 1, 3) -> Reshape (B, N, C): ViT's and DeiT's attention.
    An ONNX Runtime session fuses none of these, and neither does its transformer optimizer (it expects a BERT
    export). A Softmax with anything between it and its MatMuls is left as it is: Swin's, with its relative
    position bias and shifted-window mask as MultiHeadAttention's attention_bias, made Swin-T's INT8 graph 1-26%
    slower on an AVX2 CPU (ViT-B's: 0.4-2% faster).
    `dst` is written only when something fused and the fused graph's outputs on `check` (one input batch) match
    `src`'s to float rounding (SAME_OUTPUTS); else it returns 0."""
    import onnx
    from onnx import helper

    model = onnx.load(str(src))
    graph = _AttentionMatcher(model.graph)
    matches = [m for m in map(graph.attention, model.graph.node) if m]
    if not matches:
        return 0
    replaced = {id(m.output): m.nodes for m in matches}  # in the output Reshape's place, after all it reads
    nodes = [new for node in model.graph.node for new in replaced.get(id(node), [node])]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    # the outputs typed: where ONNX Runtime's shape inference leaves a MultiHeadAttention untyped (with an attention
    # bias, tried on Swin), its quantizer leaves the output projection's input unquantized: a float MatMul
    model.graph.value_info.extend(helper.make_tensor_value_info(m.output.output[0], FLOAT, None) for m in matches)
    _drop_unread(model, lambda node: True)  # the attention's old nodes, now read by nothing
    _import_contrib_ops(model)
    onnx.save(model, str(dst))
    fused = len(matches)
    del model, graph, matches  # the weights (a node keeps its graph's): the check holds both graphs in sessions
    if not _same_outputs(src, dst, check):
        dst.unlink()
        return 0
    return fused


def fold_layer_scales(src: Path, dst: Path, check: np.ndarray) -> int:
    """Write the float graph `src` with each layer scale folded into the MatMul before it; returns how many. A layer
    scale multiplies a layer's output by a constant per output channel (ConvNeXt's gamma, after fc2, its bias Add
    and the Transpose back to NCHW; LayerScale in some ViTs): MatMul(W) -> [Add(b)] -> [Transpose] -> Mul(gamma)
    becomes MatMul(W x gamma) -> [Add(b x gamma)] -> [Transpose], the same arithmetic to float rounding with one
    elementwise pass over the layer's output less (ConvNeXt-T: 18 of them; its int8-mixed graph 2-4% faster for it
    on an AVX-512 VNNI CPU). The weights, quantized per output channel, quantize the same. `dst` is written only
    when something folded and the outputs on `check` (one input batch) match `src`'s (SAME_OUTPUTS); else it
    returns 0."""
    import onnx

    model = onnx.load(str(src))
    graph = _ScaleMatcher(model.graph)
    matches = [m for m in map(graph.layer_scale, model.graph.node) if m]
    if not matches:
        return 0
    stale = {m.last.output[0] for m in matches}  # the names the Muls read, gone with them
    for match in matches:
        graph.fold(match)
    folded_away = {id(m.mul) for m in matches}
    nodes = [node for node in model.graph.node if id(node) not in folded_away]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    model.graph.initializer.extend(graph.new_constants)
    kept = [info for info in model.graph.value_info if info.name not in stale]
    del model.graph.value_info[:]
    model.graph.value_info.extend(kept)
    _drop_unread(model, lambda node: node.op_type in ("Constant", "Identity"))  # the unscaled weights
    onnx.save(model, str(dst))
    folded = len(matches)
    del model, graph, matches
    if not _same_outputs(src, dst, check):
        dst.unlink()
        return 0
    return folded


def _same_outputs(first: Path, second: Path, x: np.ndarray) -> bool:
    """Whether ONNX Runtime runs both graphs on `x` to the same first output (SAME_OUTPUTS); a graph it cannot
    load or run (a fused node whose shapes do not fit) is not the same."""
    import onnxruntime as ort
    from onnxruntime.capi import onnxruntime_pybind11_state as errors

    outputs = []
    for path in (first, second):
        try:
            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            outputs.append(session.run(None, {session.get_inputs()[0].name: x})[0])
        except (errors.Fail, errors.InvalidArgument, errors.InvalidGraph, errors.RuntimeException,
                errors.NotImplemented):
            if path == first:
                raise  # the graph as exported: not the fusion's doing
            return False
    reference, fused = outputs
    return reference.shape == fused.shape and float(np.abs(reference - fused).max()) <= SAME_OUTPUTS * float(
        np.abs(reference).max()) + 1e-6


def fused_matmul_biases(path: Path) -> int:
    """How many MatMulIntegerToFloat nodes of the graph at `path` add a bias (fuse_matmul_bias wrote them: ONNX
    Runtime's quantizer writes none)."""
    import onnx

    return sum(node.op_type == "MatMulIntegerToFloat" and len(node.input) > 6 and bool(node.input[6])
               for node in onnx.load(str(path), load_external_data=False).graph.node)


@dataclass
class _Attention:
    output: Any  # the Reshape that merges the heads: the fused nodes write its output
    nodes: list[Any]  # Split (q, k, v from the projection) and MultiHeadAttention


@dataclass
class _MatMulBias:
    node: Any  # the MatMulIntegerToFloat NodeProto
    matmul: Any
    add: Any
    dequantizers: list[Any]  # what the MatMul and Add read through: activations, weights, a quantized bias


@dataclass
class _LayerScale:
    mul: Any  # the Mul by the scale: folded away
    matmul: Any
    add: Any  # the bias Add, or None
    transpose: Any  # or None; the last of the three writes the Mul's output
    scale: np.ndarray  # one value per output channel, or one for all

    @property
    def last(self):
        return next(node for node in (self.transpose, self.add, self.matmul) if node is not None)


class _Graph:
    """Who makes and who reads each tensor of a GraphProto, and its constants."""

    def __init__(self, graph):
        self.constants = {init.name: init for init in graph.initializer}
        self.values = graph_constants(graph)  # those and the graph's other constants
        self.producers = {out: node for node in graph.node for out in node.output}
        self.readers: dict[str, list] = {out.name: [None] for out in graph.output}  # a graph output is a reader
        for node in graph.node:
            for name in node.input:
                self.readers.setdefault(name, []).append(node)

    def _only_reader(self, name: str, op_type: str):
        readers = self.readers.get(name, [])
        return readers[0] if len(readers) == 1 and readers[0] and readers[0].op_type == op_type else None

    def value(self, name: str) -> np.ndarray | None:
        """The value of a constant (runtimes/tensorrt.graph_constants: an initializer, a Constant node's output, an
        Identity of either); None for anything computed."""
        from onnx import numpy_helper

        tensor = self.values.get(name)
        return None if tensor is None else numpy_helper.to_array(tensor)


class _BiasMatcher(_Graph):
    """Finds the MatMul + bias Add pairs of a Q/DQ graph that fuse into MatMulIntegerToFloat (fuse_matmul_bias)."""

    def __init__(self, graph):
        super().__init__(graph)
        self.new_constants: dict[str, Any] = {}  # float biases dequantized here

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
        axis = _attribute(dequantize, "axis", 1)
        return scale is not None and (len(scale.dims) == 0 or (list(scale.dims) == [columns] and axis in (1, -1)))


class _ScaleMatcher(_Graph):
    """Finds the layer scales of a float graph that fold into the MatMul before them (fold_layer_scales)."""

    def __init__(self, graph):
        super().__init__(graph)
        self.new_constants: list[Any] = []  # the scaled weights and biases

    def layer_scale(self, mul) -> _LayerScale | None:
        """The fold for one Mul, or None unless it multiplies, by a float constant with one value per output
        channel (or one in all), the output of MatMul(constant 2-D float weights) -> [Add(constant float bias, one
        value per column)] -> [Transpose], each read by the next alone."""
        if mul.op_type != "Mul" or len(mul.input) != 2:
            return None
        constants = [name for name in mul.input if name in self.values]
        if len(constants) != 1:
            return None
        found = self._chain(next(name for name in mul.input if name != constants[0]))
        scale = self.value(constants[0])
        if found is None or scale.dtype != np.float32:
            return None
        matmul, add, transpose = found
        columns = self.value(matmul.input[1]).shape[1]
        bias = self.value(self._bias_name(add)) if add is not None else None
        if bias is not None and (bias.dtype != np.float32 or bias.shape != (columns,)):
            return None
        perm = list(_attribute(transpose, "perm")) if transpose is not None else None
        channel = (perm.index(len(perm) - 1), len(perm)) if perm else None  # where the Transpose moved it
        vector = _per_channel(scale, columns, channel)
        return None if vector is None else _LayerScale(mul, matmul, add, transpose, vector)

    def fold(self, match: _LayerScale) -> None:
        """Scale the match's weights (and bias) and make the last node before its Mul write the Mul's output."""
        from onnx import numpy_helper

        inputs = [(match.matmul, 1)]
        if match.add is not None:
            inputs.append((match.add, list(match.add.input).index(self._bias_name(match.add))))
        for node, index in inputs:
            scaled = self.value(node.input[index]) * match.scale
            node.input[index] = f"{node.input[index]}_x_{match.mul.output[0]}"  # unique: one Mul, one output
            self.new_constants.append(numpy_helper.from_array(scaled.astype(np.float32), node.input[index]))
        match.last.output[0] = match.mul.output[0]

    def _chain(self, name: str) -> tuple[Any, Any, Any] | None:
        """(MatMul, its bias Add or None, a Transpose or None) ending at `name`, each read by the next alone."""
        add = transpose = None
        node = self._sole_producer(name)
        if node is not None and node.op_type == "Transpose" and _attribute(node, "perm") is not None:
            transpose, node = node, self._sole_producer(node.input[0])
        if node is not None and node.op_type == "Add" and self._bias_name(node):
            add, node = node, self._sole_producer(next(n for n in node.input if n != self._bias_name(node)))
        if node is None or node.op_type != "MatMul":
            return None
        weight = self.value(node.input[1])
        if weight is None or weight.ndim != 2 or weight.dtype != np.float32:
            return None
        return node, add, transpose

    def _sole_producer(self, name: str):
        """The node that writes `name` when one node alone reads it."""
        return self.producers.get(name) if len(self.readers.get(name, [])) == 1 else None

    def _bias_name(self, add) -> str | None:
        constants = [name for name in add.input if self.value(name) is not None]
        return constants[0] if len(add.input) == 2 and len(constants) == 1 else None


def _per_channel(scale: np.ndarray, columns: int, channel: tuple[int, int] | None) -> np.ndarray | None:
    """`scale` as one value per column (or one for all) when it varies along the channel axis alone and adds no
    axis to the output: (axis, rank) where a Transpose moved the channel axis; without one, the output's rank is
    unknown here, so a scale of one axis at most; else None."""
    axis, rank = channel or (0, 1)
    if scale.ndim > rank:
        return None
    if scale.size == 1:
        return scale.reshape(()).astype(np.float32)
    shape = [1] * (rank - scale.ndim) + list(scale.shape)  # broadcast from the right
    if shape[axis] != columns or any(size != 1 for i, size in enumerate(shape) if i != axis):
        return None
    return scale.reshape(columns).astype(np.float32)


class _AttentionMatcher(_Graph):
    """Finds timm's self-attention in a float graph (fuse_attention)."""

    def attention(self, softmax) -> _Attention | None:
        """The fused nodes for one Softmax, or None unless it is timm's self-attention (fuse_attention)."""
        from onnx import helper

        if softmax.op_type != "Softmax" or _attribute(softmax, "axis", -1) not in (-1, 3):
            return None
        scores, context = self.producers.get(softmax.input[0]), self._only_reader(softmax.output[0], "MatMul")
        if scores is None or scores.op_type != "MatMul" or context is None or context.input[0] != softmax.output[0]:
            return None
        merge = self._only_reader(context.output[0], "Transpose")
        output = merge and self._only_reader(merge.output[0], "Reshape")
        if output is None or _attribute(merge, "perm") != [0, 2, 1, 3] or not self._rank_3(output.input[1]):
            return None
        (q, q_scale), (k_t, k_scale) = self._unscaled(scores.input[0]), self._unscaled(scores.input[1])
        transpose = self.producers.get(k_t)
        if transpose is None or transpose.op_type != "Transpose" or _attribute(transpose, "perm") != [0, 1, 3, 2]:
            return None
        heads = self._heads([q, transpose.input[0], context.input[1]])
        if heads is None:
            return None
        (qkv, num_heads), name = heads, output.output[0]
        parts = [f"{name}_{part}" for part in "qkv"]
        scale = {} if q_scale is None or k_scale is None else {"scale": q_scale * k_scale}
        return _Attention(output, [
            helper.make_node("Split", [qkv], parts, axis=-1, name=f"{name}_split_qkv"),  # in three equal parts
            helper.make_node("MultiHeadAttention", parts, [name], name=f"{name}_attention", domain="com.microsoft",
                             num_heads=num_heads, **scale)])

    def _unscaled(self, name: str) -> tuple[str, float | None]:
        """(the tensor a Mul by a scalar scales, that scalar) or (`name`, 1.0) when no Mul makes it. The scalar is
        None when the graph computes it (the exported scaled-dot-product attention takes the square root of 1/sqrt
        of the head size from q's shape): MultiHeadAttention's default scale, checked by fuse_attention."""
        mul = self.producers.get(name)
        if mul is None or mul.op_type != "Mul":
            return name, 1.0
        first, second = mul.input
        for tensor, factor in ((first, second), (second, first)):
            value = self.value(factor)
            if value is not None and value.size == 1:
                return tensor, float(value.ravel()[0])
        made = [self.producers.get(i) for i in mul.input]
        tensor = next((i for i, node in zip(mul.input, made) if node and node.op_type in ("Squeeze", "Gather",
                                                                                          "Transpose")), None)
        return (tensor, None) if tensor is not None else (name, 1.0)

    def _heads(self, qkv_parts: list[str]) -> tuple[str, int] | None:
        """(the projection's output, heads) when the three tensors are parts 0, 1, 2 of one Reshape (B, N, 3,
        heads, head size or -1) -> Transpose (2, 0, 3, 1, 4) of it, split or gathered along axis 0."""
        parts = [self._part(name) for name in qkv_parts]
        if None in parts or len({source for source, _ in parts}) != 1 or [i for _, i in parts] != [0, 1, 2]:
            return None
        transpose = self.producers.get(parts[0][0])
        if transpose is None or transpose.op_type != "Transpose" or _attribute(transpose, "perm") != [2, 0, 3, 1, 4]:
            return None
        reshape = self.producers.get(transpose.input[0])
        dims = self._shape_tail(reshape.input[1], 3) if reshape is not None and reshape.op_type == "Reshape" else None
        if dims is None or dims[0] != 3 or dims[1] <= 0 or not (dims[2] > 0 or dims[2] == -1):
            return None
        return reshape.input[0], dims[1]

    def _part(self, name: str) -> tuple[str, int] | None:
        """(source, index) for Squeeze(axis 0) of output `index` of a Split along axis 0 of `source`, or
        Gather(source, index) along axis 0."""
        node = self.producers.get(name)
        if node is not None and node.op_type == "Gather" and _attribute(node, "axis", 0) == 0:
            index = self.value(node.input[1])
            return (node.input[0], int(index)) if index is not None and index.size == 1 else None
        if node is None or node.op_type != "Squeeze":
            return None
        split = self.producers.get(node.input[0])
        if split is None or split.op_type != "Split" or _attribute(split, "axis", 0) != 0 or len(split.output) != 3:
            return None
        return split.input[0], list(split.output).index(node.input[0])

    def _shape_tail(self, name: str, count: int) -> list[int] | None:
        """The last `count` values of a shape tensor: a constant, or a Concat whose last inputs are constants."""
        value = self.value(name)
        if value is not None:
            return [int(v) for v in value.ravel()[-count:]]
        concat = self.producers.get(name)
        if concat is None or concat.op_type != "Concat" or len(concat.input) < count:
            return None
        tail = [self.value(i) for i in concat.input[-count:]]
        return None if any(v is None or v.size != 1 for v in tail) else [int(v.ravel()[0]) for v in tail]

    def _rank_3(self, shape: str) -> bool:
        """Whether a Reshape to `shape` makes three dimensions (B, N, heads x head size, in timm's attention; the
        output check tells a wrong one)."""
        value, concat = self.value(shape), self.producers.get(shape)
        return value.size == 3 if value is not None else bool(
            concat is not None and concat.op_type == "Concat" and len(concat.input) == 3)


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
        axis = _attribute(dequantize, "axis", 1) % values.ndim
        shape = [1] * values.ndim
        shape[axis] = scale.size
        scale, zero = scale.reshape(shape), zero.reshape(shape)
    return ((values - zero).astype(np.float32) * scale).astype(np.float32)


def drop_unused_qdq(model) -> None:
    """Remove the QuantizeLinear and DequantizeLinear nodes nothing reads (and, in turn, those only they read),
    then the initializers nothing reads: the graph holds no dead INT8 ops. Subgraphs (If, Loop, Scan) count as
    readers, and so do the graph's inputs and outputs."""
    _drop_unread(model, lambda node: node.op_type in QDQ_NODES)


def _drop_unread(model, removable) -> None:
    """Remove the nodes `removable` accepts whose outputs nothing reads (and, in turn, those only they read), then
    the initializers nothing reads. Subgraphs count as readers, and so do the graph's inputs and outputs."""
    graph = model.graph
    ends = {value.name for value in (*graph.output, *graph.input)}
    while True:
        read = _names_read(graph.node) | ends
        dead = [node for node in graph.node if removable(node) and not any(name in read for name in node.output)]
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


def _import_contrib_ops(model) -> None:
    """Declare ONNX Runtime's contributed operator domain (com.microsoft), once, for the fused nodes."""
    from onnx import helper

    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))


def _attribute(node, name: str, default=None):
    from onnx import helper

    return next((helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)


def _zero_point(dequantize) -> str:
    return dequantize.input[2] if len(dequantize.input) > 2 else ""
