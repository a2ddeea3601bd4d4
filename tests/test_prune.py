"""Structured pruning: real timm models, Torch-Pruning, OpenVINO, ONNX Runtime and NNCF, real data."""
import dataclasses
import json

import numpy as np
import onnx
import pytest
import torch
from conftest import needs_fashion_mnist
from typer.testing import CliRunner

from edgevision.cli.app import app
from edgevision.compression.prune import PruneError, prune_model
from edgevision.data import open_source
from edgevision.errors import ModelError
from edgevision.models import load_model, write_checkpoint
from edgevision.models.checkpoint import spec_meta
from edgevision.models.structure import apply_structure
from edgevision.models.zoo import count_gmacs
from edgevision.pipeline.export import export_run, open_run
from edgevision.pipeline.presets import preset_for
from edgevision.pipeline.resolve import resolve
from edgevision.pipeline.run import compress_model as compress
from edgevision.runtimes.onnxruntime import ORTRunner, export_onnx
from edgevision.runtimes.openvino import native_bf16

FAMILIES = ["convnext_mini", "vit_mini", "swin_mini", "maxvit_mini"]
runner = CliRunner()


@pytest.mark.parametrize("ratio", [0.3, 0.5])
@pytest.mark.parametrize("name", FAMILIES)
def test_each_family_prunes_smaller_and_reloads_to_identical_logits(tmp_path, name, ratio):
    loaded = load_model(name, weights="random")
    result = prune_model(loaded.model, loaded.spec.family, ratio, loaded.spec.input_size)
    assert result.params_after < result.params_before * (1 - ratio / 3)  # much smaller, not a token cut
    assert count_gmacs(result.model, loaded.spec.input_size) < count_gmacs(loaded.model, loaded.spec.input_size)
    assert sum(p.numel() for p in loaded.model.parameters()) == result.params_before  # the original is untouched
    x = torch.randn(2, *loaded.spec.input_size)
    with torch.no_grad():
        logits = result.model(x)
    assert logits.shape == (2, loaded.spec.num_classes)
    # saved as safetensors with the structure as data, reloaded through the normal checkpoint path
    path = tmp_path / "pruned.safetensors"
    write_checkpoint(path, result.model.state_dict(),
                     spec_meta(dataclasses.replace(loaded.spec, structure=result.structure)))
    back = load_model(checkpoint=path)
    assert back.spec.structure == result.structure
    with torch.no_grad():
        assert torch.equal(back.model(x), logits)
    # and the pruned graph exports to ONNX and runs there
    onnx_path = export_onnx(result.model, loaded.spec.input_size, tmp_path / "p.onnx", dynamic_batch=True)
    np.testing.assert_allclose(ORTRunner(onnx_path)(x.numpy()), logits.numpy(), rtol=1e-3, atol=1e-4)


def test_heads_and_widths_are_what_the_rules_say():
    vit = load_model("vit_mini", weights="random")
    pruned = prune_model(vit.model, "vit", 0.5, vit.spec.input_size).model
    attn = pruned.blocks[0].attn
    assert attn.num_heads == 2 and attn.qkv.out_features == 3 * 2 * attn.head_dim  # 3 heads -> 2, whole heads
    assert pruned.blocks[0].mlp.fc1.out_features == 192  # 384 -> 192
    assert pruned.embed_dim == 96  # ViT keeps its residual width
    swin = load_model("swin_mini", weights="random")
    p = prune_model(swin.model, "swin", 0.5, swin.spec.input_size).model
    merge = p.layers[1].downsample
    width0 = p.layers[0].blocks[0].norm1.normalized_shape[0]
    assert width0 == 16 and merge.norm.normalized_shape[0] == 4 * width0  # patch merging follows the stage width
    assert p.layers[1].blocks[0].attn.relative_position_bias_table.shape[1] == p.layers[1].blocks[0].attn.num_heads


def test_swin_patch_merging_keeps_the_same_channels_in_each_copy():
    """The 4C input of patch merging is 4 copies of the stage's C channels: the kept ones must line up."""
    swin = load_model("swin_mini", weights="random")
    m = swin.model
    with torch.no_grad():  # tag each channel of the two stages so the kept ones can be read back
        for s in (0, 1):
            norm = m.layers[s].blocks[0].norm1
            norm.weight.copy_(torch.arange(1, norm.weight.numel() + 1, dtype=torch.float))
    original = m.layers[1].downsample.reduction.weight.detach().clone()
    p = prune_model(m, "swin", 0.5, swin.spec.input_size).model
    keep0 = (p.layers[0].blocks[0].norm1.weight.detach() - 1).long().tolist()
    keep1 = (p.layers[1].blocks[0].norm1.weight.detach() - 1).long().tolist()
    width = original.shape[1] // 4
    columns = [k * width + c for k in range(4) for c in keep0]
    assert torch.equal(p.layers[1].downsample.reduction.weight.detach(), original[keep1][:, columns])


def test_taylor_importance_uses_the_data_and_needs_it():
    vit = load_model("vit_mini", weights="random")
    x = torch.randn(8, *vit.spec.input_size)
    batches = [(x, torch.randint(0, vit.spec.num_classes, (8,)))]
    taylor = prune_model(vit.model, "vit", 0.5, vit.spec.input_size, importance="taylor", batches=batches)
    magnitude = prune_model(vit.model, "vit", 0.5, vit.spec.input_size)
    assert taylor.params_after == magnitude.params_after
    assert not torch.equal(taylor.model.blocks[0].mlp.fc1.weight, magnitude.model.blocks[0].mlp.fc1.weight)
    with pytest.raises(PruneError, match="taylor importance needs data"):
        prune_model(vit.model, "vit", 0.5, vit.spec.input_size, importance="taylor")


def test_unsupported_family_and_bad_ratio_are_one_line_errors():
    other = load_model("resnet18", weights="random", num_classes=10, img_size=32)
    with pytest.raises(PruneError, match="no pruning rules for the 'other' family"):
        prune_model(other.model, other.spec.family, 0.5, other.spec.input_size)
    done = runner.invoke(app, ["prune", "convnext_mini", "--ratio", "0"])
    assert done.exit_code == 2 and "between 0 and 1" in done.output and "Traceback" not in done.output
    with pytest.raises(ModelError, match="does not have"):
        apply_structure(load_model("vit_mini", weights="random").model, {"no.such.module": {"x": 1}}, {})


@pytest.mark.parametrize("name", FAMILIES)
def test_pruned_models_quantize_to_int8_in_openvino(tmp_path, name):
    loaded = load_model(name, weights="random")
    recipe = resolve(preset_for(loaded.spec.family), None, {
        "calib_size": 16, "benchmark_iters": 3, "runtime": "openvino", "prune": {"ratio": 0.5, "finetune_epochs": 0}})
    result = compress(loaded, open_source("builtin:photos"), recipe, tmp_path / "run", progress=False)
    report = result.report.to_dict()
    names = [(v["name"], v["runtime"]) for v in report["variants"]]
    bf16 = [("int8-bf16", "openvino")] if native_bf16() else []  # where the CPU computes bf16 natively
    mixed = ("int8-mixed", "openvino")  # when INT8 won some classes of layer here and lost others (placement.py)
    assert [n for n in names if n != mixed] == [("fp32", "pytorch"), ("pruned", "pytorch"), ("fp32", "openvino"),
                                                ("int8", "openvino"), *bf16]
    assert report["pruning"]["params_after"] < report["pruning"]["params_before"]
    assert report["variants"][3]["quantization"]["fake_quantize_ops"] > 0
    # the run keeps the pruned model, and its manifest the structure
    back = load_model(checkpoint=result.run_dir / "model.safetensors")
    assert back.spec.structure and sum(p.numel() for p in back.model.parameters()) == report["pruning"]["params_after"]


@needs_fashion_mnist
def test_recovery_fine_tune_wins_back_accuracy_and_the_run_exports(tmp_path, trained_checkpoint):
    loaded = load_model(checkpoint=trained_checkpoint)
    recipe = resolve(preset_for("convnext"), None, {
        "int8": False, "eval_limit": 300, "benchmark_iters": 3,
        "prune": {"ratio": 0.5, "finetune_epochs": 1, "finetune_images": 4000}})
    train = open_source("builtin:fashion-mnist:train")
    result = compress(loaded, open_source("builtin:fashion-mnist:test"), recipe, tmp_path / "run", calib_source=train,
                      progress=False)
    v = {x["name"]: x for x in result.report.to_dict()["variants"] if x["runtime"] == "pytorch"}
    before, after = v["pruned, before recovery"], v["pruned"]
    # distillation pulls the pruned model back towards the unpruned one, on images it was not trained on
    # (how much top-1 that wins back depends on the teacher; benchmarks/prune.py measures it)
    assert after["kl"] < 0.8 * before["kl"] and after["agreement"] > before["agreement"]
    recovery = result.report.to_dict()["pruning"]["recovery"]
    assert recovery["images"] == 4000 and recovery["time_s"] > 0
    # a pruned run exports like any other: the Jetson bundle passes the TensorRT rules
    bundle = export_run(open_run(result.run_dir), "jetson", "int8", tmp_path / "bundle", progress=False)
    assert bundle.report.to_dict()["tensorrt"]["rules_check"]["passed"]
    model = onnx.load(str(bundle.run_dir / "model.onnx"))
    assert model.graph.output[0].name == "logits"


def test_prune_cli_writes_a_checkpoint_that_loads(tmp_path):
    out = tmp_path / "pruned run"
    done = runner.invoke(app, ["prune", "maxvit_mini", "--weights", "random", "--ratio", "0.3", "--out", str(out),
                               "--json"])
    assert done.exit_code == 0, done.output
    report = json.loads(done.stdout)
    assert report["pruning"]["recovery"] is None and report["pruning"]["ratio"] == 0.3
    again = runner.invoke(app, ["benchmark", "--checkpoint", str(out / "model.safetensors"), "--iters", "2",
                                "--throughput-batch", "0", "--json"])
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["model"]["params_m"] * 1e6 == pytest.approx(report["pruning"]["params_after"], abs=1e3)
