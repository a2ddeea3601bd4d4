"""Hugging Face Transformers checkpoints as a model source (models/hf.py): tiny configs built here, saved with
save_pretrained, never downloaded."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from conftest import photo
from typer.testing import CliRunner

from edgevision.cli.app import app
from edgevision.data.loader import eval_transform
from edgevision.errors import ModelError
from edgevision.models import load_model

transformers = pytest.importorskip("transformers", reason="the hf extra (transformers) is not installed")
runner = CliRunner()


def _save(model, processor, folder):
    torch.manual_seed(0)
    model.eval().save_pretrained(folder)
    processor.save_pretrained(folder)
    return model, folder


@pytest.fixture
def tiny_vit(tmp_path):
    torch.manual_seed(0)
    config = transformers.ViTConfig(hidden_size=48, num_hidden_layers=2, num_attention_heads=3, intermediate_size=96,
                                    image_size=32, patch_size=8, num_labels=4,
                                    id2label={0: "cat", 1: "dog", 2: "owl", 3: "fox"},
                                    label2id={"cat": 0, "dog": 1, "owl": 2, "fox": 3})
    processor = transformers.ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.4, 0.5, 0.6],
                                               image_std=[0.2, 0.25, 0.3])
    return _save(transformers.ViTForImageClassification(config), processor, tmp_path / "tiny-vit")


@pytest.fixture
def tiny_convnext(tmp_path):
    torch.manual_seed(0)
    config = transformers.ConvNextConfig(hidden_sizes=[8, 16, 32, 64], depths=[1, 1, 2, 1], num_labels=3,
                                         image_size=32)
    processor = transformers.ConvNextImageProcessor(size={"shortest_edge": 32}, crop_pct=0.875)
    return _save(transformers.ConvNextForImageClassification(config), processor, tmp_path / "tiny-convnext")


@pytest.fixture
def tiny_swin(tmp_path):
    torch.manual_seed(0)
    config = transformers.SwinConfig(image_size=32, patch_size=2, embed_dim=16, depths=[2, 2, 2], num_heads=[1, 2, 4],
                                     window_size=4, num_labels=3)
    processor = transformers.ViTImageProcessor(size={"height": 32, "width": 32})
    return _save(transformers.SwinForImageClassification(config), processor, tmp_path / "tiny-swin")


def _logits_gap(original, loaded, seed=1):
    x = torch.randn(3, *loaded.spec.input_size, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return float((original(pixel_values=x).logits - loaded.model(x)).abs().max())


@pytest.mark.parametrize("fixture,timm_name,family", [("tiny_vit", "vit_base_patch16_224", "vit"),
                                                      ("tiny_convnext", "convnext_tiny", "convnext"),
                                                      ("tiny_swin", "swin_tiny_patch4_window7_224", "swin")])
def test_save_pretrained_folder_converts_to_timm_with_matching_logits(request, fixture, timm_name, family):
    original, folder = request.getfixturevalue(fixture)
    logs: list[str] = []
    loaded = load_model(checkpoint=folder, log=logs.append)
    assert type(loaded.model).__module__.startswith("timm.")
    assert loaded.spec.timm_name == timm_name and loaded.spec.family == family  # presets and pruning apply
    assert _logits_gap(original, loaded) < 1e-4
    assert any("converted" in line and timm_name in line for line in logs)


def test_converted_swin_is_resized_by_timm_at_another_size(tiny_swin):
    loaded = load_model(checkpoint=tiny_swin[1], img_size=64)
    assert loaded.spec.resized.settings["window_size"] == [[8, 8]] * 3
    with torch.no_grad():
        assert loaded.model(torch.zeros(1, 3, 64, 64)).shape == (1, 3)


def test_class_names_and_preprocessing_come_from_the_checkpoint(tiny_vit, tiny_convnext):
    """The same tensors as the checkpoint's own image processor gives, for a fixed resize and for ConvNeXt's
    shortest-edge resize and centre crop."""
    image = photo((57, 41), seed=3)
    for (_, folder), atol in ((tiny_vit, 0.02), (tiny_convnext, 0.02)):
        loaded = load_model(checkpoint=folder)
        ours = eval_transform(loaded.spec.data_config)(image).numpy()
        processor = transformers.AutoImageProcessor.from_pretrained(folder, use_fast=False)
        theirs = processor(images=image, return_tensors="np")["pixel_values"][0]
        assert ours.shape == theirs.shape
        assert np.abs(ours - theirs).mean() < atol
    assert load_model(checkpoint=tiny_vit[1]).spec.classes == ["cat", "dog", "owl", "fox"]
    assert load_model(checkpoint=tiny_convnext[1]).spec.classes is None  # LABEL_0...: no names


def test_hub_id_is_read_from_the_local_cache(tiny_vit, tmp_path, monkeypatch):
    import shutil

    import huggingface_hub.constants as c

    original, folder = tiny_vit
    repo = tmp_path / "hub" / "models--acme--tiny-vit"
    shutil.copytree(folder, repo / "snapshots" / "abc")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc")
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "hub"))
    loaded = load_model("hf:acme/tiny-vit")
    assert loaded.spec.name == "hf:acme/tiny-vit" and _logits_gap(original, loaded) < 1e-4
    with pytest.raises(ModelError, match="not in the local cache|cannot read"):
        load_model("hf:acme/absent")


def test_missing_transformers_is_one_line_naming_the_extra(tiny_vit, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers raises ImportError
    result = runner.invoke(app, ["evaluate", "--checkpoint", str(tiny_vit[1]), "--data", "builtin:photos"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1].startswith("error: Hugging Face Transformers models need")
    assert '.[hf]' in result.output and "Traceback" not in result.output


def test_other_model_types_run_as_generic_models_without_pruning(tmp_path):
    """A Transformers ResNet (no timm conversion): loaded as transformers_image_classifier with the original's
    logits, compressed to INT8, exported from the run without transformers' help, refused by prune in one line."""
    torch.manual_seed(0)
    config = transformers.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], num_labels=2)
    original, folder = _save(transformers.ResNetForImageClassification(config),
                             transformers.ConvNextImageProcessor(size={"shortest_edge": 32}), tmp_path / "resnet")
    loaded = load_model(checkpoint=folder)
    assert loaded.spec.timm_name == "transformers_image_classifier" and loaded.spec.family == "other"
    assert loaded.spec.input_size == (3, 32, 32) and _logits_gap(original, loaded) == 0.0
    run = tmp_path / "run"
    done = runner.invoke(app, ["compress", "--checkpoint", str(folder), "--int8", "--data", "builtin:photos",
                               "--calib-size", "8", "--iters", "3", "--out", str(run), "--json"])
    assert done.exit_code == 0, done.output
    exported = runner.invoke(app, ["export", str(run), "--target", "onnx", "--out", str(tmp_path / "onnx"), "--json"])
    assert exported.exit_code == 0, exported.output
    assert (tmp_path / "onnx" / "model_int8.onnx").is_file()
    pruned = runner.invoke(app, ["prune", "--checkpoint", str(folder), "--ratio", "0.5", "--out", str(tmp_path / "p")])
    assert pruned.exit_code == 2 and "no pruning rules for the 'other' family" in pruned.output


def test_tiny_vit_compresses_to_int8_and_exports_for_the_three_targets(tiny_vit, tmp_path):
    run = tmp_path / "run"
    done = runner.invoke(app, ["compress", "--checkpoint", str(tiny_vit[1]), "--int8", "--data", "builtin:photos",
                               "--calib-size", "16", "--iters", "3", "--max-drop", "none", "--out", str(run), "--json"])
    assert done.exit_code == 0, done.output
    report = json.loads(done.stdout)
    assert report["model"]["name"] == "hf:tiny-vit" and report["model"]["family"] == "vit"
    assert any(v["name"] == "int8" for v in report["variants"])
    for target, artifact in (("cpu", None), ("onnx", "model_int8.onnx"), ("jetson", "model.onnx")):
        out = tmp_path / target
        exported = runner.invoke(app, ["export", str(run), "--target", target, "--out", str(out), "--json"])
        assert exported.exit_code == 0, exported.output
        bundle = json.loads(exported.stdout)
        assert bundle["status"] == "ok" and bundle["model"]["timm_name"] == "vit_base_patch16_224"
        assert artifact is None or (out / artifact).is_file()
