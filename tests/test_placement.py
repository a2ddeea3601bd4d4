"""The latency-aware INT8 placement: compute layers classed on a real exported graph (ONNX and OpenVINO), the
float/INT8 decision per class on recorded profiles, and the placement written by ONNX Runtime's real quantizer and
by NNCF's."""
import dataclasses
import logging
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
import torch
from conftest import tiny_vit

from edgevision.measure.layers import LayerProfile
from edgevision.quantization import placement
from edgevision.quantization import quantize as quantize_module
from edgevision.quantization.budget import Guard, GuardClock
from edgevision.quantization.onnxruntime import QDQSettings
from edgevision.quantization.quantize import LatencyAwareRequest, quantize
from edgevision.runtimes import onnxruntime as ort_backend
from edgevision.runtimes.layers import DEPTHWISE, GEMM, OTHER, LayerTime


class Block(torch.nn.Module):
    """One layer of each class: a dense conv, a depthwise conv, a linear layer and a matmul of two activations."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 16, 3, padding=1)
        self.dw = torch.nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.fc = torch.nn.Linear(16, 16)

    def forward(self, x):
        x = self.dw(self.conv(x)).flatten(2).transpose(1, 2)  # B x 64 x 16
        x = self.fc(x)
        return (x @ x.transpose(1, 2)).mean(dim=(1, 2)).unsqueeze(1).repeat(1, 10)


@pytest.fixture(scope="module")
def block_onnx(tmp_path_factory):
    path = tmp_path_factory.mktemp("placement") / "block.onnx"
    return ort_backend.export_onnx(Block().eval(), (3, 8, 8), path)


def names_by_class(graph) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, cls in placement.compute_classes(graph).items():
        out.setdefault(cls, []).append(name)
    return out


def test_compute_layers_are_classed_on_the_exported_graph(block_onnx):
    classes = names_by_class(onnx.load(str(block_onnx)).graph)
    assert {cls: len(names) for cls, names in classes.items()} == {
        "conv": 1, "depthwise conv": 1, "weight matmul": 1, "activation matmul": 1}


def recorded(graph) -> tuple[LayerProfile, LayerProfile]:
    """Profiles as ONNX Runtime names them: a float graph's fused/NCHWc layers, an INT8 graph's converted layers
    and the quantize/dequantize nodes named after their tensors. Here the depthwise conv loses in INT8."""
    c = {cls: names[0] for cls, names in names_by_class(graph).items()}
    dw_input = next(n for n in graph.node if n.name == c["depthwise conv"]).input[0]
    float_profile = LayerProfile("onnxruntime", 10, [
        LayerTime(c["conv"] + "_output_0_nchwc", "Conv", GEMM, False, 1000, 2.0),
        LayerTime(c["depthwise conv"] + "_output_0_nchwc", "Conv", DEPTHWISE, False, 100, 0.5),
        LayerTime(c["weight matmul"] + "/MatMulAddFusion", "Gemm", GEMM, False, 1000, 1.0),
        LayerTime(c["activation matmul"], "MatMul", GEMM, False, 1000, 0.4),
        LayerTime("ReorderOutput_token_1", "ReorderOutput", OTHER, False, 0, 0.1)])
    int8_profile = LayerProfile("onnxruntime", 10, [
        LayerTime(c["conv"] + "_token_3", "QLinearConv", GEMM, True, 1000, 1.0),
        LayerTime(c["depthwise conv"] + "_token_4", "QLinearConv", DEPTHWISE, True, 100, 0.45),
        LayerTime(dw_input + "_QuantizeLinear", "QuantizeLinear", OTHER, False, 0, 0.2),
        LayerTime(c["weight matmul"] + "_token_5", "MatMulIntegerToFloat", GEMM, True, 1000, 0.6),
        LayerTime(c["activation matmul"] + "_token_6", "MatMulIntegerToFloat", GEMM, True, 1000, 0.39)])
    return float_profile, int8_profile


def test_int8_is_kept_per_class_where_it_measured_faster_quantize_cost_counted(block_onnx):
    graph = onnx.load(str(block_onnx)).graph
    rows = {r.layer_class: r for r in placement.payoff_by_class(*recorded(graph), graph)}
    assert rows["conv"].kept == "int8" and rows["conv"].int8_ms == 1.0
    # 0.45 ms of INT8 kernel beats 0.5 of float, but the quantize node of its input makes it 0.65: float
    assert rows["depthwise conv"].int8_ms == pytest.approx(0.65) and rows["depthwise conv"].kept == "float"
    assert rows["weight matmul"].kept == "int8"
    # within the profiler's noise INT8 has not shown that it pays: float, for the whole-graph check to decide
    assert rows["activation matmul"].kept == "float"
    classes = names_by_class(graph)
    assert placement.float_nodes(graph, list(rows.values())) == sorted(classes["depthwise conv"]
                                                                       + classes["activation matmul"])


def test_a_class_seen_in_int8_alone_goes_float_and_one_neither_profile_saw_keeps_int8(block_onnx):
    """A float layer the profile could not match (a fusion renamed it) gives no evidence that INT8 pays; a class
    missing from both profiles (fused away in both) is left as quantized."""
    graph = onnx.load(str(block_onnx)).graph
    float_profile, int8_profile = recorded(graph)
    c = {cls: names[0] for cls, names in names_by_class(graph).items()}
    float_profile.layers[:] = [t for t in float_profile.layers
                               if not t.name.startswith((c["depthwise conv"], c["activation matmul"]))]
    int8_profile.layers[:] = [t for t in int8_profile.layers if not t.name.startswith(c["activation matmul"])]
    rows = {r.layer_class: r for r in placement.payoff_by_class(float_profile, int8_profile, graph)}
    assert rows["depthwise conv"].float_ms == 0 and rows["depthwise conv"].kept == "float"
    assert rows["activation matmul"].int8_ms == rows["activation matmul"].float_ms == 0
    assert rows["activation matmul"].kept == "int8"


def timed_as(monkeypatch, medians: dict[str, float]) -> None:
    """The whole-graph timing stood in for: each graph timed takes its median from `medians`, by its name there."""
    monkeypatch.setattr(quantize_module, "compare_latency", lambda runners, shape, **kw: {
        name: SimpleNamespace(latency_ms_p50=medians[name]) for name in runners})


def placed_run(monkeypatch, graph, whole_ms: float, placed_ms: float):
    """A run whose profiles are the recorded ones and whose whole-graph timing says `whole_ms` (every class INT8)
    and `placed_ms` (the losing class in float): the real quantizer writes what they decide."""
    monkeypatch.setattr(quantize_module, "profile_pair", lambda first, second, shape: recorded(graph))
    timed_as(monkeypatch, {"every class INT8": whole_ms, "placed": placed_ms})
    rng = np.random.default_rng(0)
    return SimpleNamespace(threads=1, guard=Guard(None, "off (asked)"), guard_clock=GuardClock(), input_size=(3, 8, 8),
                           log=lambda msg: None, settings=lambda cls: QDQSettings(),
                           calibration=lambda: [rng.standard_normal((1, 3, 8, 8), dtype=np.float32) for _ in range(4)])


def weight_is_int8(written, node_name: str) -> bool:
    node = next(n for n in written.node if n.name == node_name)
    producers = {out: n.op_type for n in written.node for out in n.output}
    return producers.get(node.input[1]) == "DequantizeLinear"


def test_the_placement_quantizes_again_with_the_losing_class_in_float(block_onnx, tmp_path, monkeypatch):
    graph = onnx.load(str(block_onnx)).graph
    run = placed_run(monkeypatch, graph, whole_ms=2.0, placed_ms=1.5)
    [done] = quantize(run, LatencyAwareRequest(block_onnx, tmp_path / "mixed.onnx"))
    written, classes = onnx.load(str(done.model)).graph, names_by_class(graph)
    assert not weight_is_int8(written, classes["depthwise conv"][0]) and weight_is_int8(written, classes["conv"][0])
    assert done.record.format == "u8s8" and classes["depthwise conv"][0] in done.record.excluded_nodes
    assert done.record.placement.float_classes == ["activation matmul", "depthwise conv"]
    assert done.record.placement.timed_ms == {"every class INT8": 2.0, "placed": 1.5}
    assert [(p.layer_class, p.kept) for p in done.record.placement.classes][:2] == [("conv", "int8"),
                                                                                    ("depthwise conv", "float")]
    assert not list(tmp_path.glob(".split-*"))


def test_a_float_island_slower_as_a_whole_keeps_every_class_int8(block_onnx, tmp_path, monkeypatch):
    """Per layer the depthwise conv loses in INT8, but the graph with it in float times slower whole (reorders and
    quantize/dequantize at its edges): the graph with every class in INT8 is kept."""
    graph = onnx.load(str(block_onnx)).graph
    run = placed_run(monkeypatch, graph, whole_ms=1.5, placed_ms=2.0)
    [done] = quantize(run, LatencyAwareRequest(block_onnx, tmp_path / "mixed.onnx"))
    classes = names_by_class(graph)
    assert weight_is_int8(onnx.load(str(done.model)).graph, classes["depthwise conv"][0])
    assert done.record.placement.float_classes == [] and classes["depthwise conv"][0] not in done.record.excluded_nodes
    assert not list(tmp_path.glob(".split-*"))


@pytest.fixture(scope="module")
def block_openvino():
    """The block as OpenVINO models: float, and NNCF INT8 calibrated on 4 random images."""
    from edgevision.quantization import openvino as nncf_ov
    from edgevision.runtimes import openvino as ov_backend

    fp32 = ov_backend.convert(Block().eval(), (3, 8, 8))
    rng = np.random.default_rng(0)
    calibration = [rng.standard_normal((1, 3, 8, 8), dtype=np.float32) for _ in range(4)]
    return fp32, nncf_ov.quantize(fp32, calibration, nncf_ov.NNCFSettings())


def openvino_names(model) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, cls in placement.openvino_classes(model).items():
        out.setdefault(cls, []).append(name)
    return out


def test_openvino_compute_ops_are_classed_weight_and_activation_matmuls_apart(block_openvino):
    fp32, int8 = block_openvino
    assert {cls: len(names) for cls, names in openvino_names(fp32).items()} == {
        "conv": 1, "depthwise conv": 1, "weight matmul": 1, "activation matmul": 1}
    assert openvino_names(int8) == openvino_names(fp32)  # NNCF's quantizers do not hide a weight's constant


def recorded_openvino(int8) -> tuple[LayerProfile, LayerProfile]:
    """Profiles as OpenVINO's CPU plugin names them: layers by the plugin's types, a FakeQuantize it ran on its
    own named after it. Here the depthwise conv loses in INT8 once the quantizer of its input is counted."""
    dw = next(op for op in int8.get_ops() if op.get_type_name() == "GroupConvolution")
    fq = dw.input_value(0).get_node()
    assert fq.get_type_name() == "FakeQuantize"
    float_profile = LayerProfile("openvino", 10, [
        LayerTime("conv", "Convolution:brgconv_avx2_f32", GEMM, False, 1000, 2.0),
        LayerTime("dw", "GroupConvolution:brgconv_avx2_dw_f32", DEPTHWISE, False, 100, 0.5),
        LayerTime("fc", "FullyConnected:gemm_mlas_f32", GEMM, False, 1000, 1.0),
        LayerTime("attn", "MatMul:brgemm_avx2_f32", GEMM, False, 1000, 0.4)])
    int8_profile = LayerProfile("openvino", 10, [
        LayerTime("conv", "Convolution:jit_avx2_I8", GEMM, True, 1000, 1.0),
        LayerTime("dw", "GroupConvolution:jit_avx2_I8", DEPTHWISE, True, 100, 0.45),
        LayerTime(fq.get_friendly_name(), "Subgraph:jit_avx2_f32", OTHER, False, 0, 0.2),
        LayerTime("fc", "FullyConnected:jit_gemm_I8", GEMM, True, 1000, 1.5),
        LayerTime("attn", "MatMul:brgemm_avx2_i8", GEMM, True, 1000, 0.3)])
    return float_profile, int8_profile


def test_openvino_int8_is_kept_per_class_its_quantizers_counted(block_openvino):
    fp32, int8 = block_openvino
    rows = {r.layer_class: r for r in placement.openvino_payoff(*recorded_openvino(int8), fp32, int8)}
    assert rows["conv"].kept == "int8" and rows["conv"].int8_ms == 1.0
    assert rows["depthwise conv"].int8_ms == pytest.approx(0.65) and rows["depthwise conv"].kept == "float"
    assert rows["weight matmul"].kept == "float" and rows["activation matmul"].kept == "int8"


class Lines(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def test_nncf_leaves_the_classes_that_lost_in_float_without_a_line_per_node(block_openvino, monkeypatch):
    from edgevision.quantization.openvino import NNCFSettings
    from edgevision.quantization.quantize import OpenVINOLatencyAwareRequest

    fp32, int8 = block_openvino
    monkeypatch.setattr(quantize_module, "profile_pair", lambda first, second, shape: recorded_openvino(int8))
    rng = np.random.default_rng(0)
    run = SimpleNamespace(threads=1, guard=Guard(None, "off (asked)"), guard_clock=GuardClock(), input_size=(3, 8, 8),
                          log=lambda msg: None, settings=lambda cls: NNCFSettings(),
                          calibration=lambda: [rng.standard_normal((1, 3, 8, 8), dtype=np.float32) for _ in range(4)])
    logged = Lines()
    logging.getLogger("nncf").addHandler(logged)
    try:
        [done] = quantize(run, OpenVINOLatencyAwareRequest(fp32, int8))
    finally:
        logging.getLogger("nncf").removeHandler(logged)
    quantized = {op.get_type_name() for op in done.model.get_ops()
                 if any(i.get_source_output().get_node().get_type_name() == "FakeQuantize" for i in op.inputs())}
    assert "Convolution" in quantized and "GroupConvolution" not in quantized
    assert done.record.placement.float_classes == ["depthwise conv", "weight matmul"]
    ignored = done.record.settings.ignored_scope.names
    assert sorted(ignored) == sorted(openvino_names(fp32)["depthwise conv"] + openvino_names(fp32)["weight matmul"])
    assert logged.lines and not any("Not adding activation input quantizer" in line for line in logged.lines)


def test_no_openvino_candidate_where_int8_won_every_class(block_openvino, monkeypatch):
    from edgevision.quantization.openvino import NNCFSettings
    from edgevision.quantization.quantize import OpenVINOLatencyAwareRequest

    fp32, int8 = block_openvino
    float_profile, int8_profile = recorded_openvino(int8)
    slow = LayerProfile("openvino", 10, [dataclasses.replace(layer, ms=layer.ms * 3) for layer in float_profile.layers])
    monkeypatch.setattr(quantize_module, "profile_pair", lambda first, second, shape: (slow, int8_profile))
    run = SimpleNamespace(threads=1, guard=Guard(None, "off (asked)"), log=lambda msg: None,
                          settings=lambda cls: NNCFSettings(), input_size=(3, 8, 8))
    assert quantize(run, OpenVINOLatencyAwareRequest(fp32, int8)) == []


class GeluBlock(torch.nn.Module):
    """Two convolutions around a GELU (the tanh form exported as eight elementwise nodes, or the erf form), and a
    linear layer on the tokens (MatMul + Add)."""

    def __init__(self, gelu: str = "tanh"):
        super().__init__()
        self.conv1, self.conv2 = torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Conv2d(8, 8, 3, padding=1)
        self.act, self.fc = torch.nn.GELU(approximate=gelu), torch.nn.Linear(8, 10)

    def forward(self, x):
        return self.fc(self.conv2(self.act(self.conv1(x))).flatten(2).transpose(1, 2)).mean(dim=1)


def gelu_run(monkeypatch, graph, fused_ms: float):
    """INT8 won every class in the recorded profiles; the whole-graph timing says the GELU-fused graph takes
    `fused_ms` against 2.0 as quantized."""
    classes = placement.compute_classes(graph)
    layers = [(name, "Conv" if cls == "conv" else "Gemm") for name, cls in classes.items()]
    float_profile = LayerProfile("onnxruntime", 10, [LayerTime(n, op, GEMM, False, 1000, 1.0) for n, op in layers])
    int8_profile = LayerProfile("onnxruntime", 10, [LayerTime(n, op, GEMM, True, 1000, 0.5) for n, op in layers])
    monkeypatch.setattr(quantize_module, "profile_pair", lambda first, second, shape: (float_profile, int8_profile))
    timed_as(monkeypatch, {"as quantized": 2.0, "GELU fused": fused_ms})
    return SimpleNamespace(threads=1, guard=Guard(None, "off (asked)"), guard_clock=GuardClock(), input_size=(3, 8, 8),
                           log=lambda msg: None, settings=lambda cls: QDQSettings(),
                           calibration=lambda: [np.random.default_rng(i).standard_normal((1, 3, 8, 8), dtype=np.float32)
                                                for i in range(4)])  # the same images at every call


def ops(path) -> list[str]:
    return [n.op_type for n in onnx.load(str(path)).graph.node]


def fast_gelus(path) -> int:
    return ops(path).count("FastGelu")


@pytest.mark.parametrize("gelu", ["tanh", "none"])
@pytest.mark.parametrize("fused_ms,kept", [(1.5, True), (2.5, False)])
def test_gelus_become_fast_gelu_only_when_that_times_faster_and_matmul_biases_always(tmp_path, monkeypatch, fused_ms,
                                                                                    kept, gelu):
    from edgevision.runtimes.onnxruntime import ORTRunner

    fp32 = ort_backend.export_onnx(GeluBlock(gelu).eval(), (3, 8, 8), tmp_path / "gelu.onnx", dynamic_batch=True)
    run = gelu_run(monkeypatch, onnx.load(str(fp32)).graph, fused_ms)
    [done] = quantize(run, LatencyAwareRequest(fp32, tmp_path / "mixed.onnx"))
    assert fast_gelus(done.model) == (1 if kept else 0)
    assert ops(done.model).count("MatMulIntegerToFloat") == 1  # the token linear layer with its bias
    fused = 1 if kept else None
    expected = (fused, None) if gelu == "tanh" else (None, fused)  # the erf form is approximated, and says so
    assert (done.record.placement.gelu_fused, done.record.placement.gelu_approximated) == expected
    assert done.record.placement.matmul_bias_fused == 1
    assert done.record.placement.fusion_timed_ms == {"as quantized": 2.0, "GELU fused": fused_ms}
    assert not list(tmp_path.glob(".fused-*"))
    # a guard step quantizes again: with the fusion the placement kept; and FastGelu computes the same GELU (the erf
    # form to 4.7e-4)
    def placed(name, fuse):
        quantize_module._placed(fp32, tmp_path / name, run.calibration(), "minmax", [], keep_float=[], fuse_gelu=fuse,
                                profile=quantize_module.ort_qdq.PROFILES["cpu-compute"])
        return tmp_path / name

    again, plain = placed("again.onnx", kept), placed("plain.onnx", False)
    assert fast_gelus(again) == (1 if kept else 0) and fast_gelus(plain) == 0
    assert ops(again).count("MatMulIntegerToFloat") == ops(plain).count("MatMulIntegerToFloat") == 1
    x = np.random.default_rng(1).standard_normal((2, 3, 8, 8), dtype=np.float32)
    plain_out = ORTRunner(plain)(x)
    assert np.abs(ORTRunner(again)(x) - plain_out).max() < 0.02 * np.abs(plain_out).max()


@pytest.mark.parametrize("fused_attn", [True, False])
def test_attention_is_fused_only_when_that_times_faster_with_every_linear_layer_still_int8(tmp_path, monkeypatch,
                                                                                            fused_attn):
    fp32 = ort_backend.export_onnx(tiny_vit(fused_attn), (3, 32, 32), tmp_path / "model.onnx", dynamic_batch=True)
    blocks = 2
    graph, linear_int8 = onnx.load(str(fp32)).graph, []
    for fused_ms, kept in ((1.5, True), (2.5, False)):
        run = gelu_run(monkeypatch, graph, fused_ms=0.0)
        run.input_size = (3, 32, 32)
        run.calibration = lambda: [np.random.default_rng(i).standard_normal((1, 3, 32, 32), dtype=np.float32)
                                   for i in range(4)]
        medians = {"as placed": 2.0, "attention fused": fused_ms}
        timed_as(monkeypatch, {**medians, "as quantized": 2.0, "GELU fused": 2.5})  # its erf GELUs stay as they are
        [done] = quantize(run, LatencyAwareRequest(fp32, tmp_path / f"mixed-{kept}.onnx"))
        assert ops(done.model).count("MultiHeadAttention") == (blocks if kept else 0)
        assert done.record.placement.attention_fused == (blocks if kept else None)
        assert done.record.placement.attention_timed_ms == medians
        assert not list(tmp_path.glob(".attention-*"))  # neither the trial nor the fused float graph is left
        linear_int8.append(ops(done.model).count("MatMulIntegerToFloat"))
    # the same linear layers INT8 with their biases either way (the output projection reads the fused node)
    assert linear_int8[0] == linear_int8[1] >= 2 * blocks


def test_with_attention_fused_the_guard_quantizes_the_fused_graph_and_measures_against_the_exported_one(
        tmp_path, monkeypatch):
    fp32 = ort_backend.export_onnx(tiny_vit(fused_attn=True), (3, 32, 32), tmp_path / "vit.onnx", dynamic_batch=True)
    run = gelu_run(monkeypatch, onnx.load(str(fp32)).graph, fused_ms=0.0)
    run.input_size, run.guard = (3, 32, 32), Guard(1.0, "1 point")
    run.calibration = lambda: [np.random.default_rng(i).standard_normal((1, 3, 32, 32), dtype=np.float32)
                               for i in range(4)]
    timed_as(monkeypatch, {"as placed": 2.0, "attention fused": 1.5, "as quantized": 2.0, "GELU fused": 2.0})
    seen = {}

    def guard(run, record, quantize, source, path, fixes, same_as=None):  # what the guard is given, used once
        quantize(source, tmp_path / "again.onnx", run.calibration(), "minmax", [])
        seen.update(source_ops=ops(source), again_ops=ops(tmp_path / "again.onnx"), same_as=same_as)

    monkeypatch.setattr(quantize_module, "_guard_qdq", guard)
    quantize(run, LatencyAwareRequest(fp32, tmp_path / "mixed.onnx"))
    assert seen["source_ops"].count("MultiHeadAttention") == 2 and "MatMulIntegerToFloat" not in seen["source_ops"]
    assert seen["again_ops"].count("MultiHeadAttention") == 2  # a guard step keeps the attention fused
    assert seen["same_as"] == fp32  # the exported graph's outputs are the reference (the run may hold them)
    assert not list(tmp_path.glob(".attention-*"))
