"""A checkpoint made at one input size, loaded and evaluated at another (models/resize.py)."""
from __future__ import annotations

import importlib
import json

import pytest
import torch
from conftest import fake_hub_cache, fashion_mnist_installed

from edgevision import api
from edgevision.errors import ModelError
from edgevision.models import load_model, write_checkpoint
from edgevision.models.checkpoint import spec_meta

# alias, size it is made at (the zoo's), size asked for, the tensors timm must resize
RESIZABLE = [("vit_mini", 28, 56, "pos_embed"),
             ("swin_mini", 32, 64, "relative_position_bias_table"),
             ("maxvit_mini", 32, 64, "relative_position_bias_table")]


def _checkpoint(tmp_path, alias):
    loaded = load_model(alias, weights="random", seed=0, num_classes=10)
    path = tmp_path / f"{alias}.pt"
    write_checkpoint(path, loaded.model.state_dict(), spec_meta(loaded.spec))
    return loaded, path


def _timm_filtered(loaded_new, original_state):
    """What timm's own checkpoint filter gives for the original weights in a model built at the new size."""
    import timm

    spec = loaded_new.spec
    fresh = timm.create_model(spec.timm_name, pretrained=False, num_classes=spec.num_classes,
                              img_size=spec.img_size, **spec.model_kwargs)
    module = importlib.import_module(type(fresh).__module__)
    return module.checkpoint_filter_fn(original_state, fresh)


@pytest.mark.parametrize("alias,made_at,asked,resized_name", RESIZABLE)
def test_checkpoint_resized_by_timm_equals_timm_checkpoint_filter(tmp_path, alias, made_at, asked, resized_name):
    original, path = _checkpoint(tmp_path, alias)
    logs: list[str] = []
    loaded = load_model(checkpoint=path, img_size=asked, log=logs.append)

    resized = loaded.spec.resized
    assert loaded.spec.img_size == asked and loaded.spec.input_size == (3, asked, asked)
    assert resized.from_size == made_at and resized.to_size == asked
    assert resized.tensors and all(resized_name in k for k in resized.tensors)
    assert any(f"{made_at} -> {asked} px: resized" in line for line in logs)
    expected = _timm_filtered(loaded, original.model.state_dict())
    ours = loaded.model.state_dict()
    for name in resized.tensors:
        assert ours[name].shape != original.model.state_dict()[name].shape
        torch.testing.assert_close(ours[name], expected[name], rtol=0, atol=1e-6)
    with torch.no_grad():
        assert loaded.model(torch.zeros(1, 3, asked, asked)).shape == (1, 10)


@pytest.mark.parametrize("alias,made_at,asked,resized_name", RESIZABLE)
def test_a_checkpoint_saved_after_resizing_rebuilds_the_same_model(tmp_path, alias, made_at, asked, resized_name):
    _, path = _checkpoint(tmp_path, alias)
    loaded = load_model(checkpoint=path, img_size=asked)
    again = tmp_path / "again.pt"
    # through JSON, as safetensors metadata stores it: window settings become lists
    write_checkpoint(again, loaded.model.state_dict(), json.loads(json.dumps(spec_meta(loaded.spec))))
    reloaded = load_model(checkpoint=again)
    assert reloaded.spec.img_size == asked and reloaded.spec.resized is None
    x = torch.randn(2, 3, asked, asked)
    with torch.no_grad():
        torch.testing.assert_close(reloaded.model(x), loaded.model(x))


def test_plain_state_dict_made_at_the_default_size_is_resized_too(tmp_path):
    original = load_model("vit_mini", weights="random", seed=0, num_classes=10)
    torch.save(original.model.state_dict(), tmp_path / "plain.pt")
    loaded = load_model("vit_mini", checkpoint=tmp_path / "plain.pt", img_size=56)
    assert loaded.spec.resized.tensors["pos_embed"] == [[1, 49, 96], [1, 196, 96]]


def test_convnext_needs_no_resizing_and_says_so(tmp_path):
    original, path = _checkpoint(tmp_path, "convnext_mini")
    logs: list[str] = []
    loaded = load_model(checkpoint=path, img_size=64, log=logs.append)
    assert loaded.spec.resized.tensors == {} and loaded.spec.img_size == 64
    assert any("nothing to resize" in line for line in logs)
    for name, tensor in original.model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[name], tensor)


def test_a_size_the_windows_do_not_divide_is_refused_with_sizes_that_work(tmp_path):
    _, path = _checkpoint(tmp_path, "maxvit_mini")
    with pytest.raises(ModelError) as err:
        load_model(checkpoint=path, img_size=40)
    assert "cannot run at 40 px" in str(err.value)
    assert err.value.hint == "use --img-size 32 or 48"


@pytest.mark.skipif(not fashion_mnist_installed(), reason="Debian package dataset-fashion-mnist not installed")
@pytest.mark.parametrize("alias", ["vit_mini", "swin_mini"])
def test_checkpoint_evaluates_at_another_size(tmp_path, alias):
    _, path = _checkpoint(tmp_path, alias)
    size = dict((a, s) for a, _, s, _ in RESIZABLE)[alias]
    result = api.evaluate(None, "builtin:fashion-mnist:test", checkpoint=path, img_size=size, limit=32, progress=False)
    assert result.model.img_size == size and result.model.resized.to_size == size
    assert result.result.images == 32 and 0.0 <= result.result.top1 <= 100.0


def test_pretrained_weights_at_another_size_are_resampled_like_timm_does(tmp_path, monkeypatch):
    from timm.layers import resample_abs_pos_embed

    reference, _ = fake_hub_cache(tmp_path, monkeypatch, "test_vit.r160_in1k")
    loaded = load_model("test_vit", weights="pretrained", img_size=192)
    grid = reference.patch_embed.grid_size
    expected = resample_abs_pos_embed(reference.pos_embed.detach(), new_size=(192 // 16, 192 // 16),
                                      old_size=grid, num_prefix_tokens=reference.num_prefix_tokens)
    assert loaded.spec.resized.from_size == 160 and loaded.spec.weights == "pretrained"
    torch.testing.assert_close(loaded.model.pos_embed.detach(), expected, rtol=0, atol=1e-6)
