"""The CLI through typer's CliRunner: every command, --json, and one-line errors with exit codes."""
import json
import subprocess

import pytest
import torch
from conftest import needs_fashion_mnist
from typer.testing import CliRunner

from edgevision.cli.app import app

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def assert_one_line_error(result, *fragments, code=2):
    assert result.exit_code == code, result.output
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1, result.output  # one line, no traceback
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0]
    assert "Traceback" not in result.output


def test_models_lists_every_alias_as_json():
    result = run("models", "--json")
    assert result.exit_code == 0
    rows = {r["alias"]: r for r in json.loads(result.output)}
    assert {"convnext_t", "swin_t", "vit_b", "vit_l", "maxvit_t"} <= set(rows)
    assert rows["swin_t"]["timm_name"] == "swin_tiny_patch4_window7_224"


def test_models_table():
    result = run("models")
    assert result.exit_code == 0 and "vit_large_patch16_224" in result.output and "85.83 @224" in result.output


def test_train_evaluate_benchmark_round_trip(tmp_path, fmnist_folder, fmnist_test_folder):
    ckpt = tmp_path / "model with spaces.pt"
    result = run("train", "convnext_mini", "--data", fmnist_folder, "--epochs", "3", "--batch-size", "32", "--out", ckpt,
                 "--workers", "0", "--augment", "none", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["model"]["num_classes"] == 10 and report["epochs"] == 3 and ckpt.exists()

    result = run("evaluate", "--checkpoint", ckpt, "--data", fmnist_test_folder, "--limit", "200", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["images"] == 200 and report["data"] == str(fmnist_test_folder)
    assert report["top1"] > 40  # 3 epochs of 1,000 images: far above the 10% of chance
    assert report["model"]["weights"] == "checkpoint"

    result = run("evaluate", "--checkpoint", ckpt, "--data", fmnist_test_folder, "--limit", "50")
    assert result.exit_code == 0 and "top-1" in result.stdout

    # builtin:fashion-mnist names its first class 'T-shirt/top', a name no folder can have
    assert_one_line_error(run("evaluate", "--checkpoint", ckpt, "--data", "builtin:fashion-mnist"),
                          "differ from the model's", "T-shirt/top")

    result = run("benchmark", "--checkpoint", ckpt, "--threads", "1", "--iters", "5", "--warmup", "1",
                 "--throughput-batch", "4", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["runner"]["threads"] == 1 and report["iterations"] >= 5
    assert 0 < report["latency_ms_p50"] <= report["latency_ms_p99"]
    assert report["throughput_ips"] > 0 and report["cpu"]


def test_benchmark_text_output_states_cpu_and_threads():
    result = run("benchmark", "convnext_mini", "--threads", "1", "--iters", "3", "--warmup", "1",
                 "--throughput-batch", "0")
    assert result.exit_code == 0, result.output
    assert "1 threads on" in result.stdout and "p50" in result.stdout and "throughput" not in result.stdout


def test_model_arg_builds_a_custom_width():
    result = run("benchmark", "vit_small_patch16_224", "--img-size", "32", "--model-arg", "patch_size=4",
                 "--model-arg", "embed_dim=48", "--model-arg", "depth=1", "--model-arg", "num_heads=2",
                 "--iters", "2", "--warmup", "0", "--throughput-batch", "0", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["model"]["model_kwargs"]["embed_dim"] == 48


def test_unknown_model(fmnist_folder):
    assert_one_line_error(run("evaluate", "convnext_tt", "--data", fmnist_folder), "unknown model", "convnext_t")


def test_missing_path():
    assert_one_line_error(run("evaluate", "convnext_mini", "--data", "/no/such/dir"), "data path not found")


def test_empty_folder(tmp_path):
    assert_one_line_error(run("evaluate", "convnext_mini", "--data", tmp_path), "no images in")


def test_csv_with_missing_files_and_bad_labels(tmp_path, fmnist_folder):
    csv = tmp_path / "labels.csv"
    csv.write_text("file,label\nmissing.png,1\n")
    assert_one_line_error(run("evaluate", "convnext_mini", "--data", csv), "missing files: missing.png")
    first = next(fmnist_folder.glob("*/*.png"))
    csv.write_text(f"file,label\n{first},shirt\n")
    assert_one_line_error(run("evaluate", "convnext_mini", "--data", csv), "not an integer")


def test_mismatched_checkpoint(tmp_path, fmnist_folder):
    path = tmp_path / "vit.pt"
    from edgevision.models import load_model

    torch.save(load_model("vit_mini", num_classes=10).model.state_dict(), path)
    assert_one_line_error(run("evaluate", "convnext_mini", "--checkpoint", path, "--data", fmnist_folder),
                          "does not fit the model", "missing keys")


class Payload:
    """Any class outside torch's allowlist: unpickling it would import and run this module's code."""


def test_pickled_checkpoint(tmp_path, fmnist_folder):
    path = tmp_path / "pickled.pt"
    torch.save({"weights": Payload()}, path)
    assert_one_line_error(run("evaluate", "convnext_mini", "--checkpoint", path, "--data", fmnist_folder),
                          "pickled Python objects")


def test_offline_pretrained(monkeypatch, tmp_path):
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path))
    assert_one_line_error(run("benchmark", "convnext_t", "--weights", "pretrained"), "not in the local cache")


def test_train_refuses_to_overwrite(tmp_path, fmnist_folder):
    out = tmp_path / "keep.pt"
    out.write_text("user data")
    assert_one_line_error(run("train", "convnext_mini", "--data", fmnist_folder, "--out", out), "--force")
    assert out.read_text() == "user data"


def test_bad_model_arg():
    assert_one_line_error(run("benchmark", "convnext_mini", "--model-arg", "depth"), "not KEY=VALUE")


def test_unknown_runtime():
    assert_one_line_error(run("benchmark", "convnext_mini", "--runtime", "tflite"), "unknown runtime 'tflite'")


def test_debug_shows_the_traceback(fmnist_folder):
    result = run("evaluate", "convnext_tt", "--data", fmnist_folder, "--debug")
    assert result.exit_code != 0 and result.exception is not None
    assert type(result.exception).__name__ == "ModelError"


def test_python_m_entry_point():
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "edgevision", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "benchmark" in done.stdout


def test_unknown_pretrained_tag_lists_the_tags_timm_has():
    result = run("compress", "convnext_tiny.nosuchtag", "--int8")
    assert_one_line_error(result, "no pretrained tag 'nosuchtag' for convnext_tiny", "fb_in1k")


def test_out_below_a_file_is_one_line_naming_the_file(tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("precious")
    result = run("compress", "convnext_mini", "--weights", "random", "--out", blocker / "run", "--iters", "2",
                 "--calib-size", "4")
    assert_one_line_error(result, f"{blocker} is a file", "--out")
    assert blocker.read_text() == "precious" and sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


@pytest.fixture
def tiny_disk(tmp_path):
    """A 2 MiB filesystem (tmpfs, mounted as root): too small for the artifacts of one compress run."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield mount
    if subprocess.run(["umount", str(mount)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "--lazy", str(mount)], check=False)  # still busy: detach it all the same


def test_full_disk_is_one_line_and_leaves_nothing(tiny_disk):
    out = tiny_disk / "run"
    result = run("compress", "convnext_mini", "--weights", "random", "--out", out, "--iters", "2", "--calib-size",
                 "4", "--data", "builtin:photos")
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    last = result.output.strip().splitlines()[-1]  # after the run's progress lines on stderr
    assert last.startswith("error: no space left on device writing") and str(out) in last
    assert list(tiny_disk.iterdir()) == []  # the staged run directory was removed


@needs_fashion_mnist
def test_train_freeze_options_conflict_is_one_line(tmp_path):
    result = run("train", "convnext_mini", "--data", "builtin:fashion-mnist", "--out", tmp_path / "m.pt",
                 "--freeze", "backbone", "--freeze-backbone-epochs", "1")
    assert_one_line_error(result, "--freeze backbone and --freeze-backbone-epochs both given")
    result = run("train", "convnext_mini", "--data", "builtin:fashion-mnist", "--out", tmp_path / "m.pt",
                 "--epochs", "2", "--freeze-backbone-epochs", "3")
    assert_one_line_error(result, "--freeze-backbone-epochs 3 is outside 0..--epochs 2")
    assert not (tmp_path / "m.pt").exists()
