import pytest
import torch

from edgevision.errors import ModelError
from edgevision.models import ZOO, family_of, load_model, resolve_name, zoo_table
from edgevision.models.zoo import PUBLISHED_TOP1, default_pretrained_tag

# timm's architectures at their published sizes (hybrid_t is edgevision's own student: no published weights)
FULL_SIZE = [a for a, e in ZOO.items() if not e.model_kwargs and e.img_size is None and e.family != "hybrid"]
MINI = [a for a, e in ZOO.items() if e.img_size is not None]  # the small-input models, hybrid_mini included


def test_required_aliases_exist():
    for alias in ["convnext_t", "convnext_s", "convnext_b", "swin_t", "swin_s", "swin_b",
                  "vit_s", "vit_b", "vit_l", "maxvit_t"]:
        assert alias in ZOO


@pytest.mark.parametrize("alias", FULL_SIZE)
def test_full_size_alias_builds_with_right_shape_and_published_top1(alias):
    import timm

    entry = ZOO[alias]
    with torch.device("meta"):  # the real architecture, without allocating ViT-L's 1.2 GB
        model = timm.create_model(entry.timm_name, pretrained=False)
        out = model(torch.empty(2, 3, 224, 224))
    assert out.shape == (2, 1000)
    assert family_of(entry.timm_name) in ("convnext", "swin", "vit", "maxvit")
    assert default_pretrained_tag(entry.timm_name) in PUBLISHED_TOP1


@pytest.mark.parametrize("alias", MINI)
def test_mini_alias_runs_at_its_input_size(alias):
    loaded = load_model(alias, num_classes=10)
    assert loaded.spec.weights == "random"  # no pretrained weights fit a reshaped architecture
    size = ZOO[alias].img_size
    assert loaded.spec.input_size == (3, size, size)
    assert loaded.model(torch.randn(2, 3, size, size)).shape == (2, 10)


def test_zoo_table_counts_params_and_macs():
    rows = {r.alias: r for r in zoo_table()}
    assert set(rows) == set(ZOO)
    assert rows["convnext_t"].params_m == pytest.approx(28.59, abs=0.01)
    assert rows["convnext_t"].gmacs == pytest.approx(4.46, abs=0.01)
    assert rows["vit_l"].gmacs > 10 * rows["vit_s"].gmacs
    assert rows["vit_b"].imagenet_top1 == pytest.approx(85.096)
    assert rows["convnext_mini"].imagenet_top1 is None


def test_any_timm_name_is_accepted():
    r = resolve_name("resnet18")
    assert r.timm_name == "resnet18" and r.family == "other"
    assert resolve_name("convnext_tiny.fb_in1k").architecture == "convnext_tiny"


def test_unknown_name_suggests_closest_matches():
    with pytest.raises(ModelError) as err:
        resolve_name("convnext_tt")
    assert "unknown model 'convnext_tt'" in str(err.value)
    assert "convnext_t" in str(err.value)
    assert "\n" not in str(err.value)


def test_family_of():
    assert family_of("maxvit_tiny_tf_224") == "maxvit"
    assert family_of("vit_base_patch16_224.augreg2_in21k_ft_in1k") == "vit"
    assert family_of("swin_tiny_patch4_window7_224") == "swin"
    assert family_of("convnextv2_atto") == "convnext"
    assert family_of("efficientnet_b0") == "other"
