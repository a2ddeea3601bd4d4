"""Every data source, every awkward image kind, and the errors users meet."""
import numpy as np
import pytest
from conftest import broken_image_bytes, needs_fashion_mnist, photo
from PIL import Image

from edgevision.data import align_classes, balanced_indices, eval_transform, open_source
from edgevision.data.images import load_image
from edgevision.errors import DataError


def test_every_odd_image_kind_loads_as_rgb(odd_images):
    for name, path in odd_images.items():
        img = load_image(path)
        assert img.mode == "RGB", name
        assert img.size == ((30, 40) if name == "rotated.jpg" else (40, 30)), name  # EXIF rotation applied


def test_16bit_is_scaled_not_clipped(odd_images):
    grey16 = np.asarray(load_image(odd_images["grey16.png"]), dtype=float)
    grey8 = np.asarray(load_image(odd_images["grey.png"]), dtype=float)
    assert np.abs(grey16 - grey8).max() <= 1.0  # PIL's plain convert would saturate to 255


def test_transparent_pixels_composite_on_white(tmp_path):
    img = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    img.save(tmp_path / "clear.png")
    assert np.asarray(load_image(tmp_path / "clear.png")).min() == 255


def test_image_folder(image_folder):
    src = open_source(str(image_folder))
    assert src.kind == "imagefolder" and src.classes == ["cat", "dog"]
    assert len(src) == 6 and list(src.labels) == [0, 0, 0, 1, 1, 1]
    assert src.load(4).mode == "RGB"


def test_unlabelled_folder(odd_images):
    src = open_source(str(next(iter(odd_images.values())).parent))
    assert src.kind == "folder" and src.labels is None and len(src) == len(odd_images)


def test_labels_csv(image_folder):
    csv = image_folder / "labels.csv"
    csv.write_text("file,label\ncat/0.jpg,281\ndog/1.jpg,207\n\n")
    src = open_source(str(csv))
    assert src.kind == "csv" and list(src.labels) == [281, 207] and src.num_classes == 282
    assert src.load(1).size == (40, 30)


@pytest.mark.parametrize("body,message", [
    ("file,label\ncat/0.jpg,281\nnope.jpg,3\n", "names 1 missing files: nope.jpg"),
    ("file,label\ncat/0.jpg,tabby\n", "label 'tabby' is not an integer"),
    ("file,label\ncat/0.jpg,-1\n", "label -1 is negative"),
    ("path,class\ncat/0.jpg,1\n", "must start with the header 'file,label'"),
    ("file,label\ncat/0.jpg\n", "expected 'file,label'"),
    ("file,label\n", "lists no images"),
])
def test_bad_labels_csv(image_folder, body, message):
    csv = image_folder / "bad.csv"
    csv.write_text(body)
    with pytest.raises(DataError, match=message):
        open_source(str(csv))


def test_missing_empty_and_wrong_paths(tmp_path):
    with pytest.raises(DataError, match="data path not found"):
        open_source(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(DataError, match="no images in"):
        open_source(str(tmp_path / "empty"))
    with pytest.raises(DataError, match="not a .csv"):
        open_source(str(tmp_path / "empty" / "notes.txt"))
    with pytest.raises(DataError, match="unknown built-in dataset 'imagenet'"):
        open_source("builtin:imagenet")


@needs_fashion_mnist
def test_builtin_fashion_mnist_splits():
    train, test = open_source("builtin:fashion-mnist:train"), open_source("builtin:fashion-mnist")
    assert (len(train), len(test)) == (60000, 10000)
    assert test.spec == "builtin:fashion-mnist:test" and test.num_classes == 10
    assert np.bincount(test.labels).tolist() == [1000] * 10
    img = train.load(0)
    assert img.mode == "RGB" and img.size == (28, 28)
    with pytest.raises(DataError, match="no split 'val'"):
        open_source("builtin:fashion-mnist:val")


def test_builtin_photos_are_real_colour_photos():
    src = open_source("builtin:photos")
    assert len(src) >= 5 and src.labels is None
    arr = np.asarray(src.load(0))
    assert arr.shape[2] == 3 and arr.std() > 20  # a real photo, not a flat fill


def test_eval_transform_follows_data_config():
    cfg = {"input_size": [3, 32, 32], "interpolation": "bicubic", "mean": [0.5] * 3, "std": [0.5] * 3,
           "crop_pct": 1.0, "crop_mode": "center"}
    x = eval_transform(cfg)(photo((40, 30)))
    assert tuple(x.shape) == (3, 32, 32)
    assert -1.01 <= float(x.min()) and float(x.max()) <= 1.01  # normalised with mean/std 0.5


def test_unreadable_files_are_skipped_and_counted(image_folder):
    from edgevision.measure.evaluate import evaluate
    from edgevision.models import load_model
    from edgevision.runtimes.pytorch import TorchRunner

    (image_folder / "dog" / "broken.jpg").write_bytes(broken_image_bytes())
    (image_folder / "cat" / "empty.png").write_bytes(b"")
    src = open_source(str(image_folder))
    assert len(src) == 8
    loaded = load_model("convnext_mini", num_classes=2)
    result = evaluate(TorchRunner(loaded.model), src, loaded.spec.data_config, batch_size=3, progress=False)
    assert result.images == 6 and result.skipped == 2 and result.top1 is not None


def test_no_usable_image_is_an_error(tmp_path):
    from edgevision.measure.evaluate import evaluate
    from edgevision.models import load_model
    from edgevision.runtimes.pytorch import TorchRunner

    (tmp_path / "bad").mkdir()
    for i in range(3):
        (tmp_path / "bad" / f"{i}.jpg").write_bytes(broken_image_bytes())
    src = open_source(str(tmp_path / "bad"))
    loaded = load_model("convnext_mini", num_classes=2)
    with pytest.raises(DataError, match="no usable image .* all 3 files failed to decode"):
        evaluate(TorchRunner(loaded.model), src, loaded.spec.data_config, progress=False)


def test_balanced_indices_are_balanced_and_seeded():
    labels = np.repeat(np.arange(5), [100, 50, 20, 10, 3])
    idx = balanced_indices(len(labels), 20, labels, seed=3)
    assert len(idx) == 20 and len(set(idx)) == 20
    assert np.bincount(labels[idx]).tolist() == [5, 4, 4, 4, 3]  # round robin; class 4 gives all 3
    assert np.array_equal(idx, balanced_indices(len(labels), 20, labels, seed=3))
    assert not np.array_equal(idx, balanced_indices(len(labels), 20, labels, seed=4))
    assert len(balanced_indices(10, 50, None)) == 10


def test_calibration_subset_csv_round_trips(image_folder, tmp_path):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "calibration"))
    from make_subset_csv import write_subset_csv

    out = tmp_path / "sub" / "calib.csv"
    out.parent.mkdir()
    assert write_subset_csv(str(image_folder), 4, 0, out) == 4
    src = open_source(str(out))
    assert src.kind == "csv" and np.bincount(src.labels).tolist() == [2, 2]
    assert src.load(0).mode == "RGB"  # relative paths resolve from the CSV's folder


def test_classes_in_another_order_are_reindexed_and_other_names_refused(image_folder):
    src = open_source(str(image_folder))  # classes ['cat', 'dog'], labels 0 0 0 1 1 1
    assert align_classes(src, None) is src and align_classes(src, ["cat", "dog"]) is src
    swapped = align_classes(src, ["dog", "cat"])
    assert list(swapped.labels) == [1, 1, 1, 0, 0, 0] and swapped.classes == ["dog", "cat"]
    assert np.array_equal(np.asarray(swapped.load(0)), np.asarray(src.load(0)))  # same images
    assert any("re-indexed" in n for n in swapped.notes)
    with pytest.raises(DataError, match="differ from the model's .*'bird'"):
        align_classes(src, ["cat", "bird"])
