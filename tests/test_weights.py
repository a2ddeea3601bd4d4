"""Weights resolution: pretrained (cache / offline), checkpoints of every kind, and their errors."""
import os
from pathlib import Path

import pytest
import torch
from conftest import fake_hub_cache
from safetensors.torch import save_file

from edgevision.errors import ModelError
from edgevision.models import load_model, write_checkpoint
from edgevision.models.loading import pretrained_weights_file

X = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def logits(loaded):
    with torch.no_grad():
        return loaded.model.eval()(X)


@pytest.fixture
def mini():
    torch.manual_seed(1)
    return load_model("convnext_mini", num_classes=10)


def test_random_weights(mini):
    assert mini.spec.weights == "random" and mini.spec.num_classes == 10


def test_pretrained_offline_and_not_cached_fails_fast_in_one_line(tmp_path, monkeypatch):
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError) as err:
        load_model("convnext_t", weights="pretrained")
    msg = str(err.value)
    assert "not in the local cache" in msg and "--checkpoint" in msg and "--weights random" in msg
    assert "\n" not in msg


def test_pretrained_loads_from_local_hub_cache(tmp_path, monkeypatch):
    """Lay out a Hugging Face cache as the hub client does, holding timm's tiny test_convnext weights."""
    reference, snapshot = fake_hub_cache(tmp_path, monkeypatch, "test_convnext.r160_in1k")

    assert pretrained_weights_file("test_convnext") == snapshot / "model.safetensors"
    loaded = load_model("test_convnext", weights="pretrained")
    assert loaded.spec.weights == "pretrained"
    x = torch.randn(1, 3, 160, 160)
    with torch.no_grad():
        assert torch.equal(loaded.model(x), reference.eval()(x))


def test_pretrained_refused_for_reshaped_architecture():
    with pytest.raises(ModelError, match="no pretrained weights fit"):
        load_model("vit_mini", weights="pretrained")


def test_unknown_weights_value():
    with pytest.raises(ModelError, match="unknown --weights 'imagenet'"):
        load_model("convnext_mini", weights="imagenet")


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_edgevision_checkpoint_rebuilds_model_alone(mini, tmp_path, suffix):
    path = tmp_path / f"m{suffix}"
    s = mini.spec
    write_checkpoint(path, mini.model.state_dict(), {
        "model": {"name": s.name, "timm_name": s.timm_name, "num_classes": s.num_classes,
                  "img_size": s.img_size, "model_kwargs": s.model_kwargs},
        "data_config": s.data_config, "classes": [str(i) for i in range(10)]})
    loaded = load_model(checkpoint=path)  # no model name needed
    assert loaded.spec.weights == "checkpoint" and loaded.spec.classes[3] == "3"
    assert loaded.spec.data_config == s.data_config
    assert torch.equal(logits(loaded), logits(mini))


def test_plain_state_dict_with_ddp_prefix_and_inferred_classes(mini, tmp_path):
    path = tmp_path / "plain.pt"
    torch.save({"model": {f"module.{k}": v for k, v in mini.model.state_dict().items()}}, path)
    loaded = load_model("convnext_mini", checkpoint=path)  # num_classes read off the head
    assert loaded.spec.num_classes == 10
    assert torch.equal(logits(loaded), logits(mini))


def test_plain_safetensors(mini, tmp_path):
    path = tmp_path / "plain.safetensors"
    save_file({k: v.contiguous() for k, v in mini.model.state_dict().items()}, str(path))
    assert torch.equal(logits(load_model("convnext_mini", checkpoint=path, num_classes=10)), logits(mini))


def test_plain_state_dict_needs_a_model_name(mini, tmp_path):
    path = tmp_path / "plain.pt"
    torch.save(mini.model.state_dict(), path)
    with pytest.raises(ModelError, match="does not name its model"):
        load_model(checkpoint=path)


def test_mismatched_checkpoint_names_keys_and_shapes(mini, tmp_path):
    path = tmp_path / "plain.pt"
    torch.save(mini.model.state_dict(), path)
    with pytest.raises(ModelError) as err:
        load_model("convnext_mini", checkpoint=path, num_classes=7)
    msg = str(err.value)
    assert "shape mismatch" in msg and "head.fc.weight (10, 256) vs (7, 256)" in msg
    with pytest.raises(ModelError) as err:
        load_model("vit_mini", checkpoint=path, num_classes=10)
    assert "missing keys" in str(err.value) and "unexpected keys" in str(err.value)


class _Exploit:
    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


MARKER = Path("/tmp/edgevision-pickle-ran")


def test_pickled_checkpoint_that_would_run_code_is_refused(tmp_path):
    MARKER.unlink(missing_ok=True)
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {}, "payload": _Exploit()}, path)
    with pytest.raises(ModelError, match="pickled Python objects"):
        load_model("convnext_mini", checkpoint=path)
    assert not MARKER.exists()


def test_unreadable_and_missing_checkpoints(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="cannot read checkpoint"):
        load_model("convnext_mini", checkpoint=junk)
    with pytest.raises(ModelError, match="checkpoint not found"):
        load_model("convnext_mini", checkpoint=tmp_path / "nope.pt")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 16)
    with pytest.raises(ModelError, match="cannot read safetensors"):
        load_model("convnext_mini", checkpoint=bad)


def test_checkpoint_for_another_model_is_refused(mini, tmp_path):
    path = tmp_path / "m.pt"
    s = mini.spec
    write_checkpoint(path, mini.model.state_dict(), {
        "model": {"name": s.name, "timm_name": s.timm_name, "num_classes": 10, "img_size": 32,
                  "model_kwargs": s.model_kwargs}, "data_config": s.data_config})
    with pytest.raises(ModelError, match="holds a convnext_tiny model, not vit_mini"):
        load_model("vit_mini", checkpoint=path)
    with pytest.raises(ModelError, match="--num-classes 5 differs"):
        load_model(checkpoint=path, num_classes=5)
    with pytest.raises(ModelError, match="both given"):
        load_model("convnext_mini", weights="random", checkpoint=path)
