"""The one door to INT8: `quantize(run, request)` dispatches once on the kind of request, quantizes with that
backend and holds the result to the run's accuracy budget with the backend's guard.

Targets say which quantization they want (an OpenVINO model by NNCF, an ONNX graph for ONNX Runtime's CPU
kernels in some formats, an ONNX graph for TensorRT by a Q/DQ engine); runtimes only run what comes out.

| request           | backend                                   | guard                                   |
|-------------------|-------------------------------------------|-----------------------------------------|
| `OpenVINORequest`    | NNCF post-training quantization (openvino.py) | other settings, then accuracy control (openvino_guard.py) |
| `OnnxRuntimeRequest` | ONNX Runtime static Q/DQ per format, one child process (onnxruntime.py) | nodes excluded by sensitivity, format fixes (qdq_guard.py) |
| `TensorRTRequest`     | a Q/DQ engine: edgevision's placement or Model Optimizer (engines.py) | the same Q/DQ guard |
| `LatencyAwareRequest` | ONNX Runtime static Q/DQ, INT8 only where it measured faster here (placement.py) | the same Q/DQ guard |
| `OpenVINOLatencyAwareRequest` | NNCF, the classes where INT8 measured slower here in its ignored scope (placement.py) | as OpenVINORequest |
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, Callable

from edgevision.measure.bench import compare_latency
from edgevision.measure.layers import profile_pair
from edgevision.quantization import onnxruntime as ort_qdq
from edgevision.quantization import openvino as nncf_ov
from edgevision.quantization import placement
from edgevision.quantization.engines import QDQ_ENGINES
from edgevision.quantization.openvino_guard import guard_int8
from edgevision.quantization.qdq_guard import Fix, calibration_fixes, guard_qdq
from edgevision.quantization.records import NNCFRecord, QDQRecord, QuantizationRecord
from edgevision.quantization.run import QuantizationRun
from edgevision.runtimes import create_runner, ort_fusions
from edgevision.runtimes import openvino as ov_runtime

MIN_SAVING = 0.03  # of the float model's profiled time: an OpenVINO placement saving less is not built
SPLIT_CHECK_CALLS = 15  # per graph, in 3 interleaved rounds: the whole-graph check of a placement with float classes


@dataclass
class Quantized:
    model: Any  # an OpenVINO model, or the path of the Q/DQ ONNX written
    record: QuantizationRecord


@dataclass
class OpenVINORequest:
    """NNCF INT8 of an OpenVINO float model, with the recipe's `quantization` settings (or `settings`)."""

    fp32: Any  # openvino.Model
    settings: nncf_ov.NNCFSettings | None = None


@dataclass
class OpenVINOLatencyAwareRequest:
    """NNCF INT8 of an OpenVINO float model with the classes of compute layer that measured slower in INT8 on this
    CPU left in float (NNCF's ignored scope), from `int8` (every class INT8) profiled against `fp32`."""

    fp32: Any  # openvino.Model
    int8: Any  # openvino.Model


@dataclass
class OnnxRuntimeRequest:
    """The float ONNX at `fp32_path` quantized for ONNX Runtime's CPU kernels, one file per format (u8s8, u8s8-rr,
    s8s8). `saturates_u8s8`: this CPU adds u8 x s8 pairs in 16 bits (x86 without VNNI or AMX)."""

    fp32_path: Path
    outputs: dict[str, Path]  # format -> output path, in order
    saturates_u8s8: bool = False


@dataclass
class TensorRTRequest:
    """The float ONNX at `fp32_path` as symmetric Q/DQ for TensorRT by a Q/DQ engine (engines.QDQ_ENGINES)."""

    fp32_path: Path
    out_path: Path
    engine: str


@dataclass
class LatencyAwareRequest:
    """The float ONNX at `fp32_path` quantized for ONNX Runtime's CPU kernels (u8 x s8) with INT8 only on the
    classes of compute layer that measured faster in INT8 on this CPU (placement.py)."""

    fp32_path: Path
    out_path: Path
    saturates_u8s8: bool = False


Request = OpenVINORequest | OnnxRuntimeRequest | TensorRTRequest | LatencyAwareRequest | OpenVINOLatencyAwareRequest


def quantize(run: QuantizationRun, request: Request) -> list[Quantized]:
    """INT8 as the request asks, held to run.guard's budget when it has one: one result per output."""
    return BACKENDS[type(request)](run, request)


def _openvino(run: QuantizationRun, request: OpenVINORequest) -> list[Quantized]:
    q = request.settings or run.settings(nncf_ov.NNCFSettings)
    calibration = run.calibration()
    run.log(f"quantizing with {len(calibration)} calibration images ({q.preset}, model_type {q.model_type})")
    int8 = nncf_ov.quantize(request.fp32, calibration, q)
    quantized = nncf_ov.fake_quantized_layers(int8)
    record = NNCFRecord(q, ov_runtime.count_ops(int8).get("FakeQuantize", 0))
    if run.guard.max_drop is not None:
        int8, record.accuracy_control = guard_int8(run, request.fp32, int8, calibration, q)
        record.layers_returned_to_float = sorted(set(quantized) - set(nncf_ov.fake_quantized_layers(int8)))
        record.fake_quantize_ops = ov_runtime.count_ops(int8).get("FakeQuantize", 0)
    return [Quantized(int8, record)]


def _onnxruntime(run: QuantizationRun, request: OnnxRuntimeRequest) -> list[Quantized]:
    """Every format in one child process, then each held to the budget on its own."""
    qdq = run.settings(ort_qdq.QDQSettings)
    formats = list(request.outputs)
    profiles = {fmt: ort_qdq.PROFILES[ort_qdq.CPU_FORMATS[fmt]] for fmt in formats}
    records = ort_qdq.quantize_qdq_formats(request.fp32_path, {request.outputs[f]: profiles[f] for f in formats},
                                           run.calibration(), qdq.calibration_method, qdq.exclude_nodes)
    out = []
    for fmt, record in zip(formats, records):
        path, quantize = request.outputs[fmt], partial(_ort_format, profile=profiles[fmt])
        if run.guard.max_drop is not None:
            fixes = [*format_fixes(fmt, formats, request.saturates_u8s8),
                     *calibration_fixes(quantize, qdq.calibration_method)]
            _guard_qdq(run, record, quantize, request.fp32_path, path, fixes)
        out.append(Quantized(path, replace(record, format=fmt)))
    return out


def _tensorrt(run: QuantizationRun, request: TensorRTRequest) -> list[Quantized]:
    qdq, engine = run.settings(ort_qdq.QDQSettings), QDQ_ENGINES[request.engine]
    record = engine.quantize(request.fp32_path, request.out_path, run.calibration(), qdq.calibration_method,
                             qdq.exclude_nodes)
    if run.guard.max_drop is not None:
        fixes = calibration_fixes(engine.quantize, qdq.calibration_method, engine.supports)
        _guard_qdq(run, record, engine.quantize, request.fp32_path, request.out_path, fixes)
    return [Quantized(request.out_path, record)]


def _latency_aware(run: QuantizationRun, request: LatencyAwareRequest) -> list[Quantized]:
    """Compute layers in INT8, profiled against the float graph here; the classes where INT8 lost are quantized
    again in float, and that graph is kept only if it also times faster whole; then the fusions an ONNX Runtime
    session leaves undone (runtimes/ort_fusions): self-attention in the float graph and GELUs as FastGelu, each
    kept when faster whole, MatMul biases always. None when INT8 lost everywhere (the float candidates cover that)."""
    import onnx

    qdq, calibration = run.settings(ort_qdq.QDQSettings), run.calibration()
    fp32, out = request.fp32_path, request.out_path
    record = ort_qdq.quantize_qdq(fp32, out, calibration, ort_qdq.PROFILES["cpu-compute"], qdq.calibration_method,
                                  qdq.exclude_nodes)
    graph = onnx.load(str(fp32), load_external_data=False).graph
    profiles = profile_pair(create_runner("onnxruntime", fp32, threads=run.threads),
                            create_runner("onnxruntime", out, threads=run.threads), run.input_size)
    payoff = placement.payoff_by_class(*profiles, graph)
    _log_payoff(run, "ONNX Runtime", payoff)
    if all(p.kept == "float" for p in payoff):
        out.unlink()
        return []
    ort_fusions.fuse_matmul_bias(out, out)  # not timed: the same arithmetic in fewer nodes
    keep_float, timed = placement.float_nodes(graph, payoff), None
    if keep_float:
        record, keep_float, timed = _split_if_faster(run, fp32, out, record, keep_float)
    attention = _attention_if_faster(run, fp32, out, record, keep_float)
    try:
        gelus, fusion_timed = _fused_if_faster(run, out)
        placed = partial(_placed, keep_float=keep_float, fuse_gelu=gelus is not None, ranges_of=fp32)
        quantize = partial(placed, profile=ort_qdq.PROFILES["cpu-compute"])
        if run.guard.max_drop is not None:
            rr = [Fix("7-bit weights (reduce_range)", partial(placed, profile=ort_qdq.PROFILES["cpu-compute-rr"]))
                  ] if request.saturates_u8s8 else []
            _guard_qdq(run, attention.record, quantize, attention.source, out,
                       [*rr, *calibration_fixes(quantize, qdq.calibration_method)], same_as=fp32)
    finally:
        if attention.source != fp32:
            attention.source.unlink(missing_ok=True)
    float_classes = sorted({p.layer_class for p in payoff if p.kept == "float"}) if keep_float else []
    biases = ort_fusions.fused_matmul_biases(out)  # of the graph written, after the split and the guard
    tanh, erf = (gelus.tanh, gelus.erf) if gelus else (0, 0)
    done = placement.Placement(payoff, float_classes, timed, matmul_bias_fused=biases or None, gelu_fused=tanh or None,
                               gelu_approximated=erf or None, fusion_timed_ms=fusion_timed,
                               attention_fused=attention.fused or None, attention_timed_ms=attention.timed)
    return [Quantized(out, replace(attention.record, format="u8s8", placement=done))]


def _openvino_latency_aware(run: QuantizationRun, request: OpenVINOLatencyAwareRequest) -> list[Quantized]:
    """NNCF INT8 with the classes where INT8 lost in OpenVINO's profiles here in its ignored scope. None when INT8
    won or lost in every class (the INT8 and the float candidates are those), or when the classes it won would
    save under MIN_SAVING of the float model's time (a candidate not worth its quantization and timing)."""
    profiles = profile_pair(create_runner("openvino", request.fp32, threads=run.threads),
                            create_runner("openvino", request.int8, threads=run.threads), run.input_size)
    payoff = placement.openvino_payoff(*profiles, request.fp32, request.int8)
    _log_payoff(run, "OpenVINO", payoff)
    float_classes = sorted({p.layer_class for p in payoff if p.kept == "float"})
    saving = sum(p.float_ms - p.int8_ms for p in payoff if p.kept == "int8")
    if not float_classes or len(float_classes) == len(payoff) or saving < MIN_SAVING * profiles[0].total_ms:
        return []
    q = run.settings(nncf_ov.NNCFSettings)
    names = [n for n, c in placement.openvino_classes(request.fp32).items() if c in float_classes]
    scope = replace(q.ignored_scope, names=sorted({*q.ignored_scope.names, *names}))
    [done] = _openvino(run, OpenVINORequest(request.fp32, replace(q, ignored_scope=scope)))
    done.record.placement = placement.Placement(payoff, float_classes)
    return [done]


def _log_payoff(run: QuantizationRun, runtime: str, payoff: list[placement.ClassPayoff]) -> None:
    run.log(f"latency-aware INT8 ({runtime}): " + ", ".join(
        f"{p.layer_class} {p.float_ms:.1f} -> {p.int8_ms:.1f} ms ({p.kept})" for p in payoff))


def _split_if_faster(run: QuantizationRun, fp32: Path, out: Path, whole: QDQRecord, keep_float: list[str]):
    """The graph with `keep_float` in float against `out` (every class INT8), timed side by side: (the faster's
    record, its float nodes, both medians). The slower file is removed."""
    qdq = run.settings(ort_qdq.QDQSettings)
    split_path = out.with_name(f".split-{out.name}")
    split = _placed(fp32, split_path, run.calibration(), qdq.calibration_method, qdq.exclude_nodes,
                    profile=ort_qdq.PROFILES["cpu-compute"], keep_float=keep_float, fuse_gelu=False)
    kept, timed = _kept_if_faster(run, out, split_path, "every class INT8", "placed",
                                  f"latency-aware INT8 with {len(keep_float)} layers in float")
    return (split, keep_float, timed) if kept else (whole, [], timed)


@dataclass
class _AttentionCheck:
    source: Path  # the float graph `out` is quantized from: the request's, or a temporary one with attention fused
    record: QDQRecord  # of `out`
    fused: int  # attention blocks fused in `source`
    timed: dict[str, float] | None  # both graphs' medians, when the float graph had attention to fuse


def _attention_if_faster(run: QuantizationRun, fp32: Path, out: Path, record: QDQRecord, keep_float: list[str]
                         ) -> _AttentionCheck:
    """`fp32` with its self-attention fused into MultiHeadAttention (runtimes/ort_fusions.fuse_attention: ONNX
    Runtime's float kernel, in place of the INT8 or float attention matmuls and the nodes around them), quantized
    with the same placement from `fp32`'s calibration ranges, timed whole against `out` side by side; it replaces
    `out` when faster (measured: ViT-B's int8-mixed graph 0.4-2% faster on an AVX2 CPU; a CPU with fast INT8
    attention matmuls may go the other way). The fused float graph stays, for the guard's steps, until the caller
    removes it."""
    fused_fp32 = out.with_name(f".attention-{fp32.name}")
    count = ort_fusions.fuse_attention(fp32, fused_fp32, run.calibration()[0])
    if not count:
        return _AttentionCheck(fp32, record, 0, None)
    qdq, trial = run.settings(ort_qdq.QDQSettings), out.with_name(f".attention-{out.name}")
    trial_record = _placed(fused_fp32, trial, run.calibration(), qdq.calibration_method, qdq.exclude_nodes,
                           profile=ort_qdq.PROFILES["cpu-compute"], keep_float=keep_float, fuse_gelu=False,
                           ranges_of=fp32)
    kept, timed = _kept_if_faster(run, out, trial, "as placed", "attention fused",
                                  f"latency-aware INT8 with {count} attention blocks fused")
    if not kept:
        fused_fp32.unlink()
        return _AttentionCheck(fp32, record, 0, timed)
    return _AttentionCheck(fused_fp32, trial_record, count, timed)


def _fused_if_faster(run: QuantizationRun, out: Path) -> tuple[ort_fusions.GeluFusion | None, dict[str, float] | None]:
    """`out` with its GELUs as FastGelu (runtimes/ort_fusions.fuse_gelus) against `out` as it is, timed side by
    side; the fused graph replaces it when faster (measured on an AVX2 CPU: MaxViT's 45 tanh GELUs fused made its
    int8-mixed graph 27% faster; ConvNeXt-T's 18 erf GELUs in the tanh form, 3-4%; ViT-B's 12, 1-2%). (the GELUs
    fused when kept, both medians), or (None, None) when the graph has no GELU."""
    fused_path = out.with_name(f".fused-{out.name}")
    gelus = ort_fusions.fuse_gelus(out, fused_path)
    if not gelus.total:
        fused_path.unlink()
        return None, None
    kept, timed = _kept_if_faster(run, out, fused_path, "as quantized", "GELU fused",
                                  f"latency-aware INT8 with {gelus.tanh} tanh GELUs fused and {gelus.erf} erf GELUs "
                                  "in the tanh form")
    return (gelus if kept else None), timed


def _kept_if_faster(run: QuantizationRun, out: Path, trial: Path, out_name: str, trial_name: str, what: str):
    """`trial` timed whole against `out`, side by side: it replaces `out` when faster, else it is removed.
    (whether it replaced `out`, both medians by name)."""
    timed = _timed_whole(run, {out_name: out, trial_name: trial})
    run.log(f"{what}: {timed[trial_name]} ms whole, {out_name} {timed[out_name]} ms")
    if timed[trial_name] < timed[out_name]:
        trial.replace(out)
        return True, timed
    trial.unlink()
    return False, timed


def _timed_whole(run: QuantizationRun, graphs: dict[str, Path]) -> dict[str, float]:
    """Median milliseconds of each graph, timed side by side (SPLIT_CHECK_CALLS each, 3 interleaved rounds)."""
    runners = {name: create_runner("onnxruntime", path, threads=run.threads) for name, path in graphs.items()}
    results = compare_latency(runners, run.input_size, iters=SPLIT_CHECK_CALLS, rounds=3, warmup=2)
    return {name: round(r.latency_ms_p50, 3) for name, r in results.items()}


def _placed(fp32_path, out_path, calibration, method, exclude, *, profile, keep_float, fuse_gelu, ranges_of=None
            ) -> QDQRecord:
    """Q/DQ with the placement's float classes left out, whatever else a guard step leaves out, the MatMul biases
    fused, and the GELUs as FastGelu when the placement kept them so. `ranges_of`: the exported float graph, when
    `fp32_path` may be one fused from it (its calibration ranges serve both)."""
    record = ort_qdq.quantize_qdq(fp32_path, out_path, calibration, profile, method, sorted({*exclude, *keep_float}),
                                  ranges_of)
    ort_fusions.fuse_matmul_bias(out_path, out_path)
    if fuse_gelu:
        ort_fusions.fuse_gelus(out_path, out_path)
    return record


def _guard_qdq(run: QuantizationRun, record: QDQRecord, quantize, fp32_path: Path, path: Path,
               fixes: list[Fix], same_as: Path | None = None) -> None:
    record.accuracy_guard = guard_qdq(run, quantize, fp32_path, path, fixes, same_as)
    if record.accuracy_guard.excluded_nodes is not None:
        record.excluded_nodes = record.accuracy_guard.excluded_nodes


def format_fixes(fmt: str, built: list[str], saturates_u8s8: bool) -> list[Fix]:
    """7-bit weights for u8 x s8 where its 16-bit sums saturate (x86 without VNNI or AMX): a loss spread over every
    layer that leaving nodes in float cannot mend. Not when 7-bit weights are a candidate of their own."""
    if fmt != "u8s8" or "u8s8-rr" in built or not saturates_u8s8:
        return []
    rr = ort_qdq.PROFILES[ort_qdq.CPU_FORMATS["u8s8-rr"]]
    return [Fix("7-bit weights (reduce_range)", partial(_ort_format, profile=rr))]


def _ort_format(fp32_path, out_path, calibration, method, exclude, *, profile) -> QDQRecord:
    return ort_qdq.quantize_qdq(fp32_path, out_path, calibration, profile, method, exclude)


BACKENDS: dict[type, Callable[[QuantizationRun, Any], list[Quantized]]] = {
    OpenVINORequest: _openvino, OnnxRuntimeRequest: _onnxruntime, TensorRTRequest: _tensorrt,
    LatencyAwareRequest: _latency_aware, OpenVINOLatencyAwareRequest: _openvino_latency_aware}
