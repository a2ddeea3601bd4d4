"""Shared fixtures: real images of every awkward kind, real Fashion-MNIST, tiny trained models."""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a test never downloads

from edgevision.data.builtin import FASHION_MNIST_DIR  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def every_report_fits_the_schema(tmp_path_factory):
    """After the whole suite: every report.json a test wrote validates against docs/report.schema.json, the JSON
    Schema of the report types (tests/test_report.py checks that the file is the types' schema)."""
    yield
    jsonschema = pytest.importorskip("jsonschema")
    import json

    schema = json.loads((Path(__file__).resolve().parents[1] / "docs" / "report.schema.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    wrong = []
    for path in tmp_path_factory.getbasetemp().rglob("report.json"):
        data = json.loads(path.read_text())
        if "variants" in data:  # a compress, prune or export run (distill and train write reports of their own)
            wrong += [f"{path}: {e.message[:200]}" for e in validator.iter_errors(data)][:1]
    assert not wrong, wrong


def fashion_mnist_installed() -> bool:
    root = Path(os.environ.get("EDGEVISION_FASHION_MNIST_DIR", FASHION_MNIST_DIR))
    return (root / "t10k-images-idx3-ubyte.gz").is_file()


needs_fashion_mnist = pytest.mark.skipif(
    not fashion_mnist_installed(), reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")


def fake_hub_cache(tmp_path: Path, monkeypatch, tagged_name: str):
    """A Hugging Face cache laid out as the hub client does, holding random weights of a tiny timm model
    (`test_vit.r160_in1k`...); returns (the model those weights came from, the snapshot folder)."""
    import huggingface_hub.constants as c
    import timm
    from safetensors.torch import save_file

    reference = timm.create_model(tagged_name.split(".")[0], pretrained=False)
    snapshot = tmp_path / "hub" / f"models--timm--{tagged_name}" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(snapshot / "model.safetensors"))
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("abc123")
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "hub"))
    return reference, snapshot


def photo(size=(40, 30), seed=0) -> Image.Image:
    """A real-looking RGB image: a crop of a real photo shipped with scikit-image, resized."""
    import skimage.data

    arr = skimage.data.astronaut() if seed % 2 == 0 else skimage.data.coffee()
    return Image.fromarray(arr).resize(size)


def write_odd_images(folder: Path) -> dict[str, Path]:
    """One file per awkward image kind a user may have; returns name -> path."""
    folder.mkdir(parents=True, exist_ok=True)
    base = photo()
    files = {}

    def save(name, img, **kw):
        path = folder / name
        img.save(path, **kw)
        files[name] = path

    save("rgb.jpg", base)
    save("grey.png", base.convert("L"))
    save("grey_alpha.png", base.convert("LA"))
    save("palette.png", base.convert("P"))
    rgba = base.convert("RGBA")
    rgba.putalpha(128)
    save("rgba.png", rgba)
    save("cmyk.jpg", base.convert("CMYK"))
    grey16 = (np.asarray(base.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    save("grey16.png", Image.fromarray(grey16))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    save("rotated.jpg", base, exif=exif.tobytes())
    save("palette.gif", base.convert("P"))
    return files


@pytest.fixture
def odd_images(tmp_path) -> dict[str, Path]:
    return write_odd_images(tmp_path / "odd")


@pytest.fixture
def image_folder(tmp_path) -> Path:
    """An ImageFolder with 2 classes x 3 real images each."""
    root = tmp_path / "folder"
    for c, name in enumerate(["cat", "dog"]):
        (root / name).mkdir(parents=True)
        for i in range(3):
            photo(seed=c).rotate(i * 10).save(root / name / f"{i}.jpg")
    return root


def broken_image_bytes() -> bytes:
    buf = io.BytesIO()
    photo().save(buf, format="JPEG")
    return buf.getvalue()[:200]  # truncated: the header reads, the pixels do not


@pytest.fixture(scope="session")
def trained_checkpoint(tmp_path_factory) -> Path:
    """convnext_mini trained briefly on 2,000 Fashion-MNIST images: a real, better-than-chance model."""
    if not fashion_mnist_installed():
        pytest.skip("Fashion-MNIST not installed")
    from edgevision import TrainConfig, load_model, open_source, train

    out = tmp_path_factory.mktemp("ckpt") / "convnext_mini.pt"
    source = open_source("builtin:fashion-mnist:train").subset(range(2000))
    loaded = load_model("convnext_mini", num_classes=10)
    train(loaded, source, out, TrainConfig(epochs=2, workers=0, warmup_steps=10), progress=False)
    return out


def _fmnist_image_folder(root: Path, split: str, per_class: int) -> Path:
    """Fashion-MNIST as an ImageFolder of PNGs (class folders sort differently from the dataset's order)."""
    if not fashion_mnist_installed():
        pytest.skip("Fashion-MNIST not installed")
    from edgevision.data.builtin import FASHION_MNIST_CLASSES, fashion_mnist

    images, labels = fashion_mnist(split)
    for c, name in enumerate(FASHION_MNIST_CLASSES):
        folder = root / name.replace("/", "-")
        folder.mkdir(parents=True)
        for i in np.flatnonzero(labels == c)[:per_class]:
            Image.fromarray(images[i]).save(folder / f"{i}.png")
    return root


@pytest.fixture(scope="session")
def fmnist_folder(tmp_path_factory) -> Path:
    """A real ImageFolder on disk: 1,000 Fashion-MNIST training images, 100 per class."""
    return _fmnist_image_folder(tmp_path_factory.mktemp("fmnist-train"), "train", 100)


@pytest.fixture(scope="session")
def fmnist_test_folder(tmp_path_factory) -> Path:
    """500 held-out Fashion-MNIST test images, 50 per class, with the same class folders."""
    return _fmnist_image_folder(tmp_path_factory.mktemp("fmnist-test"), "test", 50)


@pytest.fixture
def budget_not_met(monkeypatch):
    """Runs report max_drop_not_met (whether a budget holds is NNCF's and the data's to decide; the CLI's
    answer to it is what the tests using this check)."""
    from edgevision.pipeline import run as pipeline

    real = pipeline.run_pipeline

    def unmet(ctx):
        report = real(ctx)
        report.status = "max_drop_not_met"
        return report

    monkeypatch.setattr(pipeline, "run_pipeline", unmet)


def tiny_vit(fused_attn: bool):
    """timm's ViT, two blocks of two heads on 32 px images; `fused_attn`: the attention path it exports (scaled
    dot-product attention, its scale computed from the head size, or the explicit q x scale @ k^T)."""
    import timm

    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, embed_dim=32,
                              depth=2, num_heads=2, num_classes=10).eval()
    for module in model.modules():
        if hasattr(module, "fused_attn"):
            module.fused_attn = fused_attn
    return model

