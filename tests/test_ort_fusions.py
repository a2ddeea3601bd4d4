"""The ONNX Runtime fusions edgevision writes itself (runtimes/ort_fusions.py), run in real ONNX Runtime sessions:
the fused graph computes what the Q/DQ graph did, with fewer nodes, and what does not match is left alone."""
import numpy as np
import onnx
import pytest
import torch
from conftest import tiny_vit
from onnx import TensorProto, helper, numpy_helper

from edgevision.quantization.onnxruntime import PROFILES, quantize_qdq
from edgevision.runtimes.onnxruntime import ORTRunner, export_onnx
from edgevision.runtimes.ort_fusions import (
    GeluFusion,
    fold_layer_scales,
    fuse_attention,
    fuse_gelus,
    fuse_matmul_bias,
    fused_matmul_biases,
)

ROWS, COLUMNS = 8, 6


def ops(path) -> list[str]:
    return [node.op_type for node in onnx.load(str(path)).graph.node]


def qdq_matmul_add(bias: str = "float", weight_axis: int = 1, extra_reader: bool = False,
                   bias_shape: tuple[int, ...] = (COLUMNS,)) -> onnx.ModelProto:
    """x -> Q -> DQ, int8 weights -> DQ, MatMul, Add(bias): the Q/DQ form ONNX Runtime's quantizer writes for a
    linear layer, its bias in float or in int32 behind a DequantizeLinear. `extra_reader` lets a second output read
    the activations' DequantizeLinear too."""
    rng = np.random.default_rng(0)
    weight_scale = rng.uniform(0.01, 0.02, COLUMNS if weight_axis == 1 else ROWS).astype(np.float32)
    constants = [
        numpy_helper.from_array(np.array(0.05, np.float32), "x_scale"),
        numpy_helper.from_array(np.array(128, np.uint8), "x_zero"),
        # 7-bit weights: the u8 x s8 kernels of AVX2 without VNNI saturate on full-range ones, and ONNX Runtime
        # runs this unfused graph in float (MatMul + Add as a Gemm), which does not
        numpy_helper.from_array(rng.integers(-63, 64, (ROWS, COLUMNS)).astype(np.int8), "w"),
        numpy_helper.from_array(weight_scale, "w_scale"),
        numpy_helper.from_array(np.zeros(len(weight_scale), np.int8), "w_zero"),
    ]
    nodes = [helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zero"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "x_scale", "x_zero"], ["xd"]),
             helper.make_node("DequantizeLinear", ["w", "w_scale", "w_zero"], ["wd"], axis=weight_axis),
             helper.make_node("MatMul", ["xd", "wd"], ["mm"])]
    values = rng.uniform(-1, 1, bias_shape).astype(np.float32)
    if bias == "float":
        constants.append(numpy_helper.from_array(values, "b"))
    else:  # int32 in steps of the activations' scale times the weights', as ONNX Runtime's quantizer writes biases
        scale = 0.05 * weight_scale
        constants += [numpy_helper.from_array((values / scale).round().astype(np.int32), "b_int32"),
                      numpy_helper.from_array(scale, "b_scale")]
        nodes.append(helper.make_node("DequantizeLinear", ["b_int32", "b_scale"], ["b"], axis=0))
    nodes.append(helper.make_node("Add", ["mm", "b"], ["y"]))
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, COLUMNS])]
    if extra_reader:
        nodes.append(helper.make_node("Relu", ["xd"], ["x_relu"]))
        outputs.append(helper.make_tensor_value_info("x_relu", TensorProto.FLOAT, [1, 4, ROWS]))
    graph = helper.make_graph(nodes, "linear", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, ROWS])],
                              outputs, constants)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def run(path, x: np.ndarray) -> list[np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})


@pytest.mark.parametrize("bias", ["float", "int32"])
def test_a_qdq_matmul_and_its_bias_add_become_one_matmul_that_computes_the_same(tmp_path, bias):
    src, dst = tmp_path / "qdq.onnx", tmp_path / "fused.onnx"
    onnx.save(qdq_matmul_add(bias), str(src))
    assert fuse_matmul_bias(src, dst) == 1
    assert ops(dst) == ["QuantizeLinear", "MatMulIntegerToFloat"]  # the DQs it read past are gone
    onnx.checker.check_model(onnx.load(str(dst)))
    names = {init.name for init in onnx.load(str(dst)).graph.initializer}
    assert "b_int32" not in names and "w" in names
    x = np.random.default_rng(1).standard_normal((1, 4, ROWS), dtype=np.float32)
    np.testing.assert_allclose(run(dst, x)[0], run(src, x)[0], rtol=1e-5, atol=1e-5)


def test_a_dequantized_tensor_that_something_else_reads_stays(tmp_path):
    src, dst = tmp_path / "qdq.onnx", tmp_path / "fused.onnx"
    onnx.save(qdq_matmul_add(extra_reader=True), str(src))
    assert fuse_matmul_bias(src, dst) == 1
    assert ops(dst).count("DequantizeLinear") == 1  # the activations' DQ, which the Relu still reads
    x = np.random.default_rng(1).standard_normal((1, 4, ROWS), dtype=np.float32)
    for fused, plain in zip(run(dst, x), run(src, x), strict=True):
        np.testing.assert_allclose(fused, plain, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", ["weights scaled per row", "a bias of rank 3"])
def test_a_matmul_whose_scales_or_bias_do_not_fit_is_left_as_it_is(tmp_path, case):
    """MatMulIntegerToFloat takes one weight scale per output column and a 1-D bias."""
    model = qdq_matmul_add(weight_axis=0) if case == "weights scaled per row" else qdq_matmul_add(bias_shape=(1, 1, COLUMNS))
    src, dst = tmp_path / "qdq.onnx", tmp_path / "fused.onnx"
    onnx.save(model, str(src))
    assert fuse_matmul_bias(src, dst) == 0
    assert ops(dst) == ops(src)


class TokenMLP(torch.nn.Module):
    """A transformer MLP on tokens: Linear (exported as MatMul + Add), GELU (tanh or erf), Linear."""

    def __init__(self, gelu: str = "tanh"):
        super().__init__()
        self.fc1, self.act, self.fc2 = torch.nn.Linear(3, 16), torch.nn.GELU(approximate=gelu), torch.nn.Linear(16, 10)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x.flatten(2).transpose(1, 2)))).mean(dim=1)


@pytest.mark.parametrize("gelu,fusion", [("tanh", GeluFusion(tanh=1, erf=0)), ("none", GeluFusion(tanh=0, erf=1))])
def test_both_fusions_on_onnx_runtimes_own_int8_graph_keep_its_outputs(tmp_path, gelu, fusion):
    # with a dynamic batch, as the cpu target exports (with a static one, ONNX Runtime's pre-processing writes
    # MatMul + Add as a Gemm between two Reshapes, which its session quantizes with the bias)
    fp32 = export_onnx(TokenMLP(gelu).eval(), (3, 8, 8), tmp_path / "mlp.onnx", dynamic_batch=True)
    calibration = [np.random.default_rng(i).standard_normal((1, 3, 8, 8), dtype=np.float32) for i in range(4)]
    int8 = tmp_path / "int8.onnx"
    quantize_qdq(fp32, int8, calibration, PROFILES["cpu-compute"])
    x = np.random.default_rng(9).standard_normal((2, 3, 8, 8), dtype=np.float32)
    as_quantized = ORTRunner(int8)(x)

    assert fuse_matmul_bias(int8, tmp_path / "biases.onnx") == 2  # the session's own arithmetic: the same outputs
    np.testing.assert_allclose(ORTRunner(tmp_path / "biases.onnx")(x), as_quantized, rtol=1e-6, atol=1e-6)
    assert (fused_matmul_biases(int8), fused_matmul_biases(tmp_path / "biases.onnx")) == (0, 2)

    assert fuse_gelus(tmp_path / "biases.onnx", tmp_path / "fused.onnx") == fusion
    fused_ops = ops(tmp_path / "fused.onnx")
    assert fused_ops.count("FastGelu") == 1 and "Erf" not in fused_ops and "Tanh" not in fused_ops
    assert fused_ops.count("MatMulIntegerToFloat") == 2 and "MatMul" not in fused_ops and "Add" not in fused_ops
    # FastGelu's tanh is not the exported one's to the last bit (the erf form's to 4.7e-4), and the next layer's
    # quantizer can round apart
    assert np.abs(ORTRunner(tmp_path / "fused.onnx")(x) - as_quantized).max() < 0.02 * np.abs(as_quantized).max()


@pytest.mark.parametrize("fused_attn", [True, False])
def test_timm_self_attention_becomes_one_multi_head_attention_that_computes_the_same(tmp_path, fused_attn):
    fp32 = export_onnx(tiny_vit(fused_attn), (3, 32, 32), tmp_path / "vit.onnx", dynamic_batch=True)
    check = np.random.default_rng(0).standard_normal((1, 3, 32, 32), dtype=np.float32)

    assert fuse_attention(fp32, tmp_path / "fused.onnx", check) == 2
    fused_ops = ops(tmp_path / "fused.onnx")
    assert fused_ops.count("MultiHeadAttention") == 2 and "Softmax" not in fused_ops
    assert len(fused_ops) < len(ops(fp32)) - 20  # the splits, transposes and scaling went with it
    x = np.random.default_rng(1).standard_normal((3, 3, 32, 32), dtype=np.float32)  # another batch size
    np.testing.assert_allclose(ORTRunner(tmp_path / "fused.onnx")(x), ORTRunner(fp32)(x), rtol=1e-4, atol=1e-5)


class BiasedAttention(torch.nn.Module):
    """timm's attention, unscaled (`extra`: "none"), with something added to the scores before the softmax ("bias",
    a learned bias per head and position as Swin adds; "input bias", a value computed from the input) or with q
    scaled by a value computed from the input ("gain")."""

    def __init__(self, extra: str):
        super().__init__()
        self.patches, self.qkv, self.extra = torch.nn.Conv2d(3, 16, 4, 4), torch.nn.Linear(16, 48), extra
        self.bias = torch.nn.Parameter(torch.randn(1, 2, 4, 4))

    def forward(self, x):
        x = self.patches(x).flatten(2).transpose(1, 2)  # B x 4 x 16
        batch, tokens, width = x.shape
        q, k, v = self.qkv(x).reshape(batch, tokens, 3, 2, 8).permute(2, 0, 3, 1, 4).unbind(0)
        if self.extra == "gain":
            q = q * x.abs().mean()
        scores = q @ k.transpose(-2, -1)
        if self.extra in ("bias", "input bias"):
            scores = scores + (self.bias if self.extra == "bias" else x.mean(dim=2)[:, None, None, :])
        return (scores.softmax(-1) @ v).transpose(1, 2).reshape(batch, tokens, width).mean(1)


@pytest.mark.parametrize("extra,fused", [("none", 1), ("bias", 0), ("input bias", 0), ("gain", 0)])
def test_attention_is_fused_only_where_the_fused_kernel_computes_the_same(tmp_path, extra, fused):
    # a bias stops the pattern; the gain does not (it multiplies q as a scale would): the outputs tell it apart
    fp32 = export_onnx(BiasedAttention(extra).eval(), (3, 8, 8), tmp_path / "attention.onnx", dynamic_batch=True)
    check = np.random.default_rng(0).standard_normal((1, 3, 8, 8), dtype=np.float32)
    assert fuse_attention(fp32, tmp_path / "fused.onnx", check) == fused
    assert (tmp_path / "fused.onnx").exists() == bool(fused)
    if fused:
        x = np.random.default_rng(1).standard_normal((3, 3, 8, 8), dtype=np.float32)
        np.testing.assert_allclose(ORTRunner(tmp_path / "fused.onnx")(x), ORTRunner(fp32)(x), rtol=1e-4, atol=1e-6)


def test_swins_window_attention_with_its_position_bias_and_window_mask_is_left_as_it_is(tmp_path):
    import timm

    swin = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, img_size=32, window_size=4,
                             embed_dim=16, depths=(2, 2), num_heads=(1, 2), num_classes=10).eval()  # one shifted
    fp32 = export_onnx(swin, (3, 32, 32), tmp_path / "swin.onnx", dynamic_batch=True)
    check = np.random.default_rng(0).standard_normal((1, 3, 32, 32), dtype=np.float32)
    assert fuse_attention(fp32, tmp_path / "fused.onnx", check) == 0
    assert not (tmp_path / "fused.onnx").exists()


def layer_scaled(family: str) -> torch.nn.Module:
    """A small timm ConvNeXt (gamma after fc2, its bias and the Transpose back to NCHW) or ViT (LayerScale after
    each block's projections), its scales drawn apart per channel: the identity they start at would hide a wrong
    axis."""
    import timm

    if family == "convnext":
        model = timm.create_model("convnext_tiny", pretrained=False, depths=(1, 1, 1, 1), dims=(8, 16, 24, 32),
                                  num_classes=10)
    else:
        model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, embed_dim=32,
                                  depth=2, num_heads=2, num_classes=10, init_values=1.0)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("gamma"):
                parameter.copy_(torch.rand(parameter.shape, generator=generator) * 2 - 0.5)
    return model.eval()


@pytest.mark.parametrize("family,scales", [("convnext", 4), ("vit", 4)])
def test_layer_scales_fold_into_the_matmul_before_them_and_compute_the_same(tmp_path, family, scales):
    fp32 = export_onnx(layer_scaled(family), (3, 32, 32), tmp_path / "fp32.onnx", dynamic_batch=True)
    x = np.random.default_rng(1).standard_normal((2, 3, 32, 32), dtype=np.float32)

    assert fold_layer_scales(fp32, tmp_path / "folded.onnx", x[:1]) == scales
    assert ops(fp32).count("Mul") - ops(tmp_path / "folded.onnx").count("Mul") == scales
    reference = ORTRunner(fp32)(x)
    np.testing.assert_allclose(ORTRunner(tmp_path / "folded.onnx")(x), reference, rtol=1e-5,
                               atol=1e-5 * np.abs(reference).max())


def test_the_onnx_target_ships_and_quantizes_convnext_with_its_layer_scales_folded(tmp_path):
    from edgevision import api
    from edgevision.models import load_model

    loaded = load_model("convnext_mini", weights="random")  # depths 1-1-3-1: six blocks, six gammas
    plain = export_onnx(loaded.model, loaded.spec.input_size, tmp_path / "plain.onnx", dynamic_batch=True)
    api.compress("convnext_mini", weights="random", target="onnx", int8=True, data="builtin:photos", calib_size=8,
                 iters=5, out=tmp_path / "run", progress=False)

    assert ops(plain).count("Mul") - ops(tmp_path / "run" / "model_fp32.onnx").count("Mul") == 6
    int8 = onnx.load(str(tmp_path / "run" / "model_int8.onnx"))
    channel_scales = [n for n in int8.graph.initializer if len(n.dims) == 4 and n.dims[0] == 1 and n.dims[2:] == [1, 1]]
    assert not channel_scales  # gamma's (1, C, 1, 1) constants went into the weights


def matmul_scaled(scale_shape: tuple[int, ...], second_reader: bool = False) -> onnx.ModelProto:
    """x (1, 4, ROWS) @ W + b, times a constant of `scale_shape`; `second_reader`: the MatMul's output is a graph
    output too."""
    rng = np.random.default_rng(0)
    constants = [numpy_helper.from_array(rng.standard_normal((ROWS, COLUMNS)).astype(np.float32), "w"),
                 numpy_helper.from_array(rng.standard_normal(COLUMNS).astype(np.float32), "b"),
                 numpy_helper.from_array(rng.uniform(0.5, 2, scale_shape).astype(np.float32), "s")]
    nodes = [helper.make_node("MatMul", ["x", "w"], ["mm"]), helper.make_node("Add", ["mm", "b"], ["biased"]),
             helper.make_node("Mul", ["biased", "s"], ["y"])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    if second_reader:
        outputs.append(helper.make_tensor_value_info("mm", TensorProto.FLOAT, None))
    graph = helper.make_graph(nodes, "scaled", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, ROWS])],
                              outputs, constants)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("scale_shape,second_reader,folded", [
    ((COLUMNS,), False, 1), ((1,), False, 1),  # per output column, one for all: folded
    ((4, 1), False, 0),  # along the tokens: not a property of the weights
    ((1, 1, 1, COLUMNS), False, 0),  # it would add axes to the output (its rank is unknown without a Transpose)
    ((COLUMNS,), True, 0),  # the unscaled output is read elsewhere too
])
def test_only_a_scale_per_output_column_of_a_matmul_read_by_it_alone_folds(tmp_path, scale_shape, second_reader,
                                                                            folded):
    onnx.save(matmul_scaled(scale_shape, second_reader), str(tmp_path / "scaled.onnx"))
    x = np.random.default_rng(2).standard_normal((1, 4, ROWS), dtype=np.float32)

    assert fold_layer_scales(tmp_path / "scaled.onnx", tmp_path / "folded.onnx", x) == folded
    assert (tmp_path / "folded.onnx").exists() == bool(folded)
    if folded:
        assert "Mul" not in ops(tmp_path / "folded.onnx")
        np.testing.assert_allclose(ORTRunner(tmp_path / "folded.onnx")(x), ORTRunner(tmp_path / "scaled.onnx")(x),
                                   rtol=1e-5)
