"""FP16 pre-flight for a TensorRT engine: the layers that TensorRT runs in FP16 (everything outside Q/DQ with
`--fp16`), checked here before the device builds them.

The float ONNX graph and an FP16 copy (ONNX Runtime's own `convert_float_to_float16`, inputs and outputs kept
float32) run on the same calibration images with every node's output exposed. A node overflows when its FP16
output holds inf or NaN where the FP32 one is finite (a hand-decomposed LayerNorm's `Pow` of activations near
1000 reaches 1e6, past FP16's 65504); it loses accuracy when its output departs from FP32 by more than
`REL_TOL` of the FP32 output's range (outputs whose range is negligible are judged for overflow only). Only the first such nodes on each path are named (their consumers inherit
the damage): those are the ones to keep in FP32 (`--layerPrecisions=NAME:fp32` with `--precisionConstraints=obey`
for TensorRT 10).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REL_TOL = 0.05  # FP16 vs FP32 node output: max abs difference / FP32 output range
# An output whose whole range is below this is not judged for accuracy (only for overflow): FP16 cannot hold
# values near 1e-6 precisely, but a ConvNeXt layer scale at its 1e-6 initialisation adds nothing to the
# residual stream it joins either.
NEGLIGIBLE_SPAN = 1e-3
IMAGES = 8  # calibration images the pre-flight runs


@dataclass
class Fp16Report:
    nodes_checked: int
    images: int
    overflow: list[str] = field(default_factory=list)  # first nodes whose FP16 output is inf/NaN
    inaccurate: list[str] = field(default_factory=list)  # first nodes off by more than REL_TOL
    worst: dict[str, float] = field(default_factory=dict)  # node -> its relative error (the five largest)
    keep_fp32: list[str] = field(default_factory=list)  # overflow and inaccurate: what build_engine.sh keeps in FP32
    rel_tol: float = REL_TOL


def _expose_all(model):
    """A copy of `model` whose every float node output is also a graph output (shapes inferred)."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    outputs = {o.name for o in inferred.graph.output}
    float_types = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)
    for value in inferred.graph.value_info:
        if value.name not in outputs and value.type.tensor_type.elem_type in float_types:
            inferred.graph.output.append(value)
    return inferred


def _session(model):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every node as it is
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _departures(fp32, fp16, images: list[np.ndarray]) -> dict[str, tuple[bool, float]]:
    """{node output: (FP16 overflowed where FP32 is finite, max |FP16 - FP32| / FP32 range)}, one image at a
    time, so that only one image's activations are held (a ViT-B exposes about 1,000 of them)."""
    names = sorted({o.name for o in fp32.get_outputs()} & {o.name for o in fp16.get_outputs()})
    feed = fp32.get_inputs()[0].name
    overflow, error, span = dict.fromkeys(names, False), dict.fromkeys(names, 0.0), dict.fromkeys(names, 0.0)
    for image in images:
        for name, a, b in zip(names, fp16.run(names, {feed: image}), fp32.run(names, {feed: image})):
            a, b = np.asarray(a, dtype=np.float32), np.asarray(b, dtype=np.float32)
            if not b.size:
                continue
            overflow[name] |= bool(np.any(~np.isfinite(a) & np.isfinite(b)))
            error[name] = max(error[name], float(np.nanmax(np.abs(a - b))))
            span[name] = max(span[name], float(np.ptp(b)))
    return {n: (overflow[n], error[n] / span[n] if span[n] >= NEGLIGIBLE_SPAN else 0.0) for n in names}


def fp16_preflight(float_onnx: Path, images: list[np.ndarray]) -> Fp16Report:
    """Check every node of the float graph in FP16 against FP32 on `images` (batch-1 float32 arrays)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(float_onnx))
    images = images[:IMAGES]
    departures = _departures(_session(_expose_all(model)),
                             _session(_expose_all(convert_float_to_float16(model, keep_io_types=True))), images)
    damaged: set[str] = set()  # outputs already off in FP16
    first: dict[str, bool] = {}  # node -> overflowed, for the nodes where the damage starts
    errors: dict[str, float] = {}
    for node in model.graph.node:  # topological order: a node starts the damage if none of its inputs is off
        outputs = [o for o in node.output if o in departures]
        if not outputs:
            continue
        overflow, error = max(departures[o] for o in outputs)
        errors[node.name] = error
        if overflow or error > REL_TOL:
            if not damaged.intersection(node.input):
                first[node.name] = overflow
            damaged.update(node.output)
    worst = sorted(((n, round(e, 4)) for n, e in errors.items() if np.isfinite(e)), key=lambda kv: -kv[1])[:5]
    return Fp16Report(nodes_checked=len(errors), images=len(images),
                      overflow=sorted(n for n, o in first.items() if o),
                      inaccurate=sorted(n for n, o in first.items() if not o), worst=dict(worst),
                      keep_fp32=sorted(first))
