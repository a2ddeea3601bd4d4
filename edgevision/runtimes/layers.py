"""Per-layer times as a runtime's own profiler reports them, in one shape for every runtime.

Each runner that can profile (OpenVINO with PERF_COUNT, ONNX Runtime with its session profiler) turns its
profiler's records into `LayerTime`s: the layer's name and operator as the runtime names them, whether it ran
in INT8, what kind of work it is, its multiply-accumulates (from the shapes the runtime ran) and its median
time per call. `measure/layers.py` sums them up against the CPU profile's GEMM roofline.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

# kinds of layer: a GEMM (convolution with several input channels per output, matrix multiply, fully
# connected), attention (matrix multiplies a runtime fused with their softmax and scaling into one layer, so its
# time is not GEMM time alone), a depthwise convolution (one input channel per output: few MACs per byte, memory
# bound), other
GEMM, ATTENTION, DEPTHWISE, OTHER = "gemm", "attention", "depthwise", "other"


@dataclass(frozen=True)
class LayerTime:
    name: str
    op: str  # the runtime's operator, with its kernel where the runtime names one (Convolution:brgconv_avx512_I8)
    kind: str  # GEMM, ATTENTION, DEPTHWISE or OTHER
    int8: bool
    macs: int  # multiply-accumulates of one call; 0 for OTHER
    ms: float  # median time of one call


def conv_work(out_shape: Sequence[int], weight_shape: Sequence[int], in_axis: int) -> tuple[str, int]:
    """Kind and MACs of a convolution whose weight holds the input channels of one group at `in_axis`
    (1 for ONNX's O x I/g x kH x kW, 2 for OpenVINO's grouped G x O/g x I/g x kH x kW): every output
    element takes I/g x kH x kW multiply-accumulates."""
    per_output = math.prod(weight_shape[in_axis:])
    return (DEPTHWISE if weight_shape[in_axis] == 1 else GEMM), math.prod(out_shape) * per_output


def matmul_work(a_shape: Sequence[int], out_shape: Sequence[int]) -> tuple[str, int]:
    """Kind and MACs of A @ B (or a fully connected layer on A): every output element takes K
    multiply-accumulates, K being A's last axis, or its second-to-last when A is transposed (its last axis
    is then the output's row count and the other is not)."""
    if len(a_shape) < 2 or len(out_shape) < 2:
        return GEMM, math.prod(out_shape) * (a_shape[-1] if a_shape else 1)
    transposed = a_shape[-1] == out_shape[-2] and a_shape[-2] != out_shape[-2]
    return GEMM, math.prod(out_shape) * (a_shape[-2] if transposed else a_shape[-1])


def attention_work(q_shape: Sequence[int], k_shape: Sequence[int], v_shape: Sequence[int]) -> int:
    """MACs of softmax(Q @ K^T) @ V: every query row takes S x D for its scores and S x Dv for its output."""
    return math.prod(q_shape[:-1]) * k_shape[-2] * (q_shape[-1] + v_shape[-1])
