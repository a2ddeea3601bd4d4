"""The training loop: a real (short) run, no overwrite without --force, and resume after a kill."""
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import needs_fashion_mnist

from edgevision import TrainConfig, load_model, open_source, train
from edgevision.errors import EdgevisionError, OutputExistsError
from edgevision.measure import evaluate_model
from edgevision.models import read_checkpoint
from edgevision.training.loop import lr_at, state_path

pytestmark = needs_fashion_mnist


def small(n=512):
    return open_source("builtin:fashion-mnist:train").subset(range(n))


def test_trained_checkpoint_learns_and_records_itself(trained_checkpoint):
    state, meta = read_checkpoint(trained_checkpoint)
    assert meta["model"]["name"] == "convnext_mini" and meta["classes"][9] == "Ankle boot"
    assert meta["training"]["data"] == "builtin:fashion-mnist:train" and meta["training"]["images"] == 2000
    losses = [h["train_loss"] for h in meta["training"]["history"]]
    assert losses[1] < losses[0]  # it learned something
    assert not state_path(trained_checkpoint).exists()  # resume state removed once finished


def test_refuses_to_overwrite_without_force(tmp_path):
    out = tmp_path / "m.pt"
    out.write_text("precious")
    loaded = load_model("convnext_mini", num_classes=10)
    with pytest.raises(OutputExistsError, match="--force"):
        train(loaded, small(64), out, TrainConfig(epochs=1, workers=0), progress=False)
    assert out.read_text() == "precious"
    test = open_source("builtin:fashion-mnist:test").subset(range(100))
    result = train(loaded, small(64), out, TrainConfig(epochs=1, workers=0), eval_source=test, force=True,
                   progress=False)
    assert read_checkpoint(out)[1]["format"] == "edgevision.checkpoint"
    # the epoch's evaluation is the written model's accuracy
    assert result.history[-1].eval_top1 == evaluate_model(load_model(checkpoint=out), test, progress=False).top1


def test_unlabelled_data_and_too_few_outputs_are_refused(tmp_path):
    with pytest.raises(EdgevisionError, match="has no labels"):
        train(load_model("convnext_mini", num_classes=10), open_source("builtin:photos"), tmp_path / "m.pt",
              progress=False)
    with pytest.raises(EdgevisionError, match="pass --num-classes 10"):
        train(load_model("convnext_mini", num_classes=3), small(64), tmp_path / "m.pt", progress=False)


def test_interrupt_saves_state_and_resume_finishes_the_remaining_steps(tmp_path):
    out, cfg = tmp_path / "m.pt", TrainConfig(epochs=2, batch_size=32, workers=0, warmup_steps=2)
    calls = []

    def stop_after_five(logits, labels, images):
        calls.append(1)
        if len(calls) == 6:
            raise KeyboardInterrupt
        return torch.nn.functional.cross_entropy(logits, labels)

    with pytest.raises(KeyboardInterrupt):
        train(load_model("convnext_mini", num_classes=10), small(256), out, cfg, progress=False,
              loss_fn=stop_after_five)
    assert not out.exists() and state_path(out).exists()

    resumed = []
    result = train(load_model("convnext_mini", num_classes=10), small(256), out, cfg, progress=False,
                   loss_fn=lambda lo, la, im: resumed.append(1) or torch.nn.functional.cross_entropy(lo, la))
    assert result.resumed_from == {"epoch": 0, "step": 5}
    assert len(resumed) == 2 * 8 - 5  # 8 steps an epoch; the 5 done are not redone
    assert len(result.history) == 2 and out.exists()


def test_resume_with_other_settings_is_refused(tmp_path):
    out = tmp_path / "m.pt"
    with pytest.raises(KeyboardInterrupt):
        train(load_model("convnext_mini", num_classes=10), small(128), out,
              TrainConfig(epochs=1, batch_size=32, workers=0), progress=False,
              loss_fn=lambda *a: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(EdgevisionError, match="other settings"):
        train(load_model("convnext_mini", num_classes=10), small(128), out,
              TrainConfig(epochs=3, batch_size=32, workers=0), progress=False)


def test_killed_cli_run_resumes_without_losing_finished_work(tmp_path, fmnist_folder):
    """SIGKILL (no chance to clean up) mid-run, then the same command continues from the saved state."""
    out = tmp_path / "m.pt"
    cmd = [sys.executable, "-m", "edgevision", "train", "convnext_mini", "--data", str(fmnist_folder),
           "--epochs", "4", "--batch-size", "8", "--out", str(out), "--save-every", "1", "--workers", "0",
           "--json"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not state_path(out).exists() and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert state_path(out).exists() and not out.exists()
    saved = torch.load(state_path(out), weights_only=True)
    assert saved["epoch"] < 4 and saved["epoch"] * 125 + saved["step"] > 0  # part done, part left
    # finish it quickly: resume keeps the settings, so the same command continues
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    import json

    report = json.loads(done.stdout)
    assert report["resumed_from"] == {"epoch": saved["epoch"], "step": saved["step"]}
    assert out.exists() and not state_path(out).exists()


def test_gradient_accumulation_matches_one_big_batch(tmp_path):
    """2 micro-batches of 16 per step = one batch of 32: the same samples, the same averaged gradient."""
    source = small(64)
    states = []
    for batch, accum in ((32, 1), (16, 2)):
        loaded = load_model("convnext_mini", num_classes=10)
        torch.manual_seed(0)
        for p in loaded.model.parameters():  # identical starting weights
            torch.nn.init.normal_(p, std=0.02)
        out = tmp_path / f"b{batch}.pt"
        train(loaded, source, out, TrainConfig(epochs=1, batch_size=batch, grad_accum=accum, workers=0,
                                               augment="none", warmup_steps=1), progress=False)
        states.append(read_checkpoint(out)[0])
    for k in states[0]:
        torch.testing.assert_close(states[0][k], states[1][k], atol=2e-5, rtol=1e-4)


def test_learning_rate_schedule():
    cfg = TrainConfig(lr=1.0, warmup_steps=10, min_lr_ratio=0.01)
    assert lr_at(0, 100, cfg) == pytest.approx(0.1)
    assert lr_at(9, 100, cfg) == pytest.approx(1.0)
    assert lr_at(55, 100, cfg) == pytest.approx(0.505, abs=0.01)
    assert lr_at(99, 100, cfg) == pytest.approx(0.01, abs=0.001)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_training_runs_under_bf16_autocast(tmp_path):
    seen = []

    def record_dtype(logits, labels, images):
        seen.append(logits.dtype)
        return torch.nn.functional.cross_entropy(logits, labels)

    loaded = load_model("convnext_mini", num_classes=10)
    original = loaded.model.forward

    def forward(x):
        out = original(x)
        seen.append(out.dtype)  # inside autocast: bf16
        return out

    loaded.model.forward = forward
    train(loaded, small(128), tmp_path / "m.pt", TrainConfig(epochs=1, batch_size=64, workers=0), device="cuda",
          progress=False, loss_fn=record_dtype)
    assert torch.bfloat16 in seen and (tmp_path / "m.pt").exists()


def test_weights_fashion_mnist_reads_the_cache_and_names_its_recipes(tmp_path, monkeypatch, trained_checkpoint):
    """`--weights fashion-mnist` loads $EDGEVISION_CACHE/fashion-mnist/ALIAS.pt without training again, and
    says so when that file was trained with settings other than the recipe's."""
    import shutil

    from edgevision.errors import ModelError
    from edgevision.models.checkpoint import read_checkpoint, write_checkpoint
    from edgevision.training.fashion_mnist import FASHION_MNIST_EPOCHS, fashion_mnist_settings

    monkeypatch.setenv("EDGEVISION_CACHE", str(tmp_path))
    cached = tmp_path / "fashion-mnist" / "convnext_mini.pt"
    cached.parent.mkdir()
    shutil.copy(trained_checkpoint, cached)
    import edgevision.models.checkpoint as checkpoint_module
    import edgevision.models.loading as loading_module

    reads = []

    def counted_read(path):
        reads.append(path)
        return read_checkpoint(path)

    monkeypatch.setattr(checkpoint_module, "read_checkpoint", counted_read)
    monkeypatch.setattr(loading_module, "read_checkpoint", counted_read)
    messages = []
    loaded = load_model("convnext_mini", weights="fashion-mnist", log=messages.append)
    assert loaded.spec.checkpoint == str(cached)
    assert reads == [cached]  # the recipe check uses the meta the load reads anyway
    assert loaded.spec.classes[9] == "Ankle boot"
    # trained by the fixture (2 epochs, light augmentation), not by the recipe (4 epochs, none)
    assert len(messages) == 1 and "epochs 2 where the recipe says 4" in messages[0]
    assert "augment light where the recipe says none" in messages[0]

    state, meta = read_checkpoint(cached)
    meta["training"]["config"].update(fashion_mnist_settings("convnext_mini"))  # as if the recipe had trained it
    write_checkpoint(cached, state, meta)
    messages.clear()
    load_model("convnext_mini", weights="fashion-mnist", log=messages.append)
    assert messages == []

    with pytest.raises(ModelError, match="no Fashion-MNIST recipe") as err:
        load_model("convnext_t", weights="fashion-mnist")
    assert "vit_teacher_mini" in err.value.hint  # the fix lists the aliases that have one
    for alias in FASHION_MNIST_EPOCHS:  # every recipe is a valid training configuration
        TrainConfig(**fashion_mnist_settings(alias))


def _seeded(alias="convnext_mini"):
    loaded = load_model(alias, num_classes=10, weights="random", seed=0)
    return loaded, {k: v.clone() for k, v in loaded.model.state_dict().items()}


def _classifier_names(model):
    from edgevision.training.freeze import classifier_module

    ids = {id(p) for p in classifier_module(model).parameters()}
    return {n for n, p in model.named_parameters() if id(p) in ids}


def test_freeze_schedule_trains_exactly_the_classifier_then_every_layer_and_survives_a_resume(tmp_path):
    """Epoch 1 with the backbone frozen, epoch 2 all layers: the parameters that receive a gradient in each
    epoch are checked, a kill after epoch 1 leaves the backbone untouched, and the resumed run unfreezes it."""
    loaded, initial = _seeded()
    model, out = loaded.model, tmp_path / "m.pt"
    head, names = _classifier_names(model), {n for n, _ in model.named_parameters()}
    cfg = TrainConfig(epochs=2, batch_size=32, workers=0, warmup_steps=1, augment="none", freeze_backbone_epochs=1)
    got_grad: list[set[str]] = []  # per micro-batch: the parameters whose gradient was accumulated
    for name, p in model.named_parameters():
        p.register_post_accumulate_grad_hook(lambda p, name=name: got_grad[-1].add(name))

    def stop_at_epoch_two(logits, labels, images):
        got_grad.append(set())
        if len(got_grad) == 5:  # 4 batches an epoch: the first of epoch 2
            raise KeyboardInterrupt
        return torch.nn.functional.cross_entropy(logits, labels)

    with pytest.raises(KeyboardInterrupt):
        train(loaded, small(128), out, cfg, progress=False, loss_fn=stop_at_epoch_two)
    assert all(seen == head for seen in got_grad[:4])
    saved = torch.load(state_path(out), weights_only=True)
    assert saved["epoch"] == 1 and saved["history"][0]["trained"] == "classifier"
    for name in names - head:
        assert torch.equal(saved["model"][name], initial[name]), name  # no gradient, no weight decay
    assert all(not torch.equal(saved["model"][name], initial[name]) for name in head)
    assert all(p.requires_grad for p in model.parameters())  # handed back trainable

    got_grad.clear()
    result = train(loaded, small(128), out, cfg, progress=False,
                   loss_fn=lambda lo, la, im: got_grad.append(set()) or torch.nn.functional.cross_entropy(lo, la))
    assert result.resumed_from == {"epoch": 1, "step": 0}
    assert len(got_grad) == 4 and all(seen == names for seen in got_grad)
    state, meta = read_checkpoint(out)
    assert [h["trained"] for h in meta["training"]["history"]] == ["classifier", "all"]
    assert meta["training"]["config"]["freeze_backbone_epochs"] == 1
    assert all(not torch.equal(state[name], initial[name]) for name in names - head)


def test_backbone_learning_rate_is_scaled(tmp_path):
    """One AdamW step from the same weights on the same batch: Adam's first update is the learning rate times
    the gradient's sign, so the backbone moves by exactly the scale times as much, the classifier the same."""
    moved = []
    for scale in (1.0, 0.1):
        loaded, initial = _seeded()
        cfg = TrainConfig(epochs=1, batch_size=64, workers=0, warmup_steps=1, augment="none", weight_decay=0.0,
                          backbone_lr_scale=scale)
        train(loaded, small(64), tmp_path / f"s{scale}.pt", cfg, progress=False)
        moved.append({k: (v - initial[k]).abs() for k, v in loaded.model.state_dict().items()
                      if v.dtype.is_floating_point})
    head = _classifier_names(loaded.model)
    backbone = [n for n, _ in loaded.model.named_parameters() if n not in head]
    for name in head:
        torch.testing.assert_close(moved[1][name], moved[0][name])
    for name in backbone:  # float32 rounding of weight + update: a few 1e-8
        torch.testing.assert_close(moved[1][name], moved[0][name] * 0.1, rtol=1e-3, atol=2e-7)
    total = [sum(float(m[n].sum()) for n in backbone) for m in moved]
    assert total[1] / total[0] == pytest.approx(0.1, rel=1e-3)


def test_freeze_options_are_checked_before_any_work(tmp_path):
    from edgevision.training.freeze import frozen_backbone_epochs

    assert frozen_backbone_epochs("backbone", 0, 3) == 3 and frozen_backbone_epochs(None, 2, 3) == 2
    with pytest.raises(EdgevisionError, match="both given"):
        frozen_backbone_epochs("backbone", 1, 3)
    with pytest.raises(EdgevisionError, match="unknown --freeze 'head'"):
        frozen_backbone_epochs("head", 0, 3)
    loaded, _ = _seeded()
    with pytest.raises(EdgevisionError, match="outside 0..--epochs 2"):
        train(loaded, small(64), tmp_path / "m.pt", TrainConfig(epochs=2, freeze_backbone_epochs=3), progress=False)
    assert not (tmp_path / "m.pt").exists() and not state_path(tmp_path / "m.pt").exists()


def test_freeze_schedule_under_torchrun_two_processes(tmp_path, fmnist_folder):
    """Two processes (gloo): the frozen backbone takes no gradient, DDP does not wait for it, and after the
    frozen epoch every layer trains."""
    import json

    out = tmp_path / "m.pt"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
           "edgevision", "train", "convnext_mini", "--weights", "random", "--data", str(fmnist_folder), "--epochs", "2",
           "--freeze-backbone-epochs", "1", "--batch-size", "32", "--augment", "none", "--workers", "0",
           "--threads", "1", "--out", str(out), "--json"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert [h["trained"] for h in report["history"]] == ["classifier", "all"]
    state, meta = read_checkpoint(out)
    assert meta["training"]["processes"] == 2 and meta["training"]["config"]["freeze_backbone_epochs"] == 1
    initial = load_model("convnext_mini", weights="random", seed=0, num_classes=10).model.state_dict()
    assert not torch.equal(state["stem.0.weight"], initial["stem.0.weight"])  # the backbone trained in epoch 2
