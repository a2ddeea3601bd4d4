"""Distillation: the loss, the teacher cache, the hybrid student, torchrun (gloo) and resume after a kill.

Teachers here are real trained models (the session's convnext_mini trained on Fashion-MNIST), students tiny
timm models with random weights; a torchrun test starts two real processes on the CPU.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from conftest import needs_fashion_mnist

from edgevision import DistillConfig, distill, load_model, open_source
from edgevision.compression.distill import STUDENT_FILE, TeacherCache, kd_loss, weights_digest
from edgevision.data.loader import TransformedDataset
from edgevision.errors import EdgevisionError
from edgevision.training.loop import state_path
from edgevision.training.supervised import transform_for

pytestmark = needs_fashion_mnist


def small(n: int, split: str = "train"):
    source = open_source(f"builtin:fashion-mnist:{split}")
    return source.subset(np.arange(n))


def run_cli(args, timeout=600, **kw):
    return subprocess.run([sys.executable, "-m", "edgevision", *args], capture_output=True, text=True,
                          timeout=timeout, **kw)


# --- the loss --------------------------------------------------------------------------------------
def test_kd_loss_is_t_squared_scaled_kl_plus_cross_entropy():
    torch.manual_seed(0)
    s, t = torch.randn(8, 5), torch.randn(8, 5) * 3
    labels = torch.randint(0, 5, (8,))
    T = 4.0
    p_t = torch.softmax(t / T, 1)
    kl = (p_t * (p_t.log() - torch.log_softmax(s / T, 1))).sum(1).mean()
    ce = torch.nn.functional.cross_entropy(s, labels)
    assert kd_loss(s, t, labels, T, alpha=0.6).item() == pytest.approx((0.6 * kl * T * T + 0.4 * ce).item(), rel=1e-5)
    assert kd_loss(s, t, None, T, alpha=1.0).item() == pytest.approx((kl * T * T).item(), rel=1e-5)  # no labels
    assert kd_loss(t, t, labels, T, alpha=1.0).item() == pytest.approx(0.0, abs=1e-6)


# --- the hybrid student ----------------------------------------------------------------------------
def test_hybrid_student_is_a_timm_model_with_conv_stages_before_attention():
    import timm
    from timm.models.convnext import ConvNeXtBlock
    from timm.models.vision_transformer import Block

    from edgevision.models.zoo import resolve_name

    assert resolve_name("hybrid_mini").timm_name == "hybrid_cnn_vit_mini"
    model = timm.create_model("hybrid_cnn_vit_tiny", num_classes=7)  # plain timm, after edgevision registered it
    kinds = [("attn" if any(isinstance(m, Block) for m in stage.modules()) else
              "conv" if any(isinstance(m, ConvNeXtBlock) for m in stage.modules()) else "?") for stage in model.stages]
    assert kinds == ["conv", "conv", "attn", "attn"]
    loaded = load_model("hybrid_mini", weights="random", num_classes=10)
    x = torch.randn(2, *loaded.spec.input_size)
    assert loaded.model(x).shape == (2, 10)
    assert loaded.model(torch.randn(1, 3, 64, 64)).shape == (1, 10)  # no fixed token count
    pooled = loaded.model.forward_head(loaded.model.forward_features(x), pre_logits=True)
    assert pooled.shape == (2, loaded.model.num_features)


def test_hybrid_student_exports_to_onnx_and_matches(tmp_path):
    import onnxruntime as ort

    from edgevision.runtimes.onnxruntime import export_onnx

    loaded = load_model("hybrid_mini", weights="random", num_classes=10)
    path = tmp_path / "h.onnx"
    export_onnx(loaded.model, loaded.spec.input_size, path, dynamic_batch=True)
    x = np.random.default_rng(0).standard_normal((3, *loaded.spec.input_size), dtype=np.float32)
    got = ort.InferenceSession(str(path)).run(None, {"input": x})[0]
    with torch.no_grad():
        want = loaded.model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-4)


# --- distillation ----------------------------------------------------------------------------------
def kl_and_agreement(teacher, student, source):
    """KL(teacher || student) at T=1 and top-1 agreement on `source`, each model with its own preprocessing."""
    from edgevision.data.loader import eval_transform

    data_t = TransformedDataset(source, eval_transform(teacher.spec.data_config))
    data_s = TransformedDataset(source, eval_transform(student.spec.data_config))
    with torch.no_grad():
        t = teacher.model.eval()(torch.stack([data_t[i][0][0] for i in range(len(source))]))
        s = student.model.eval()(torch.stack([data_s[i][0][0] for i in range(len(source))]))
    kl = torch.nn.functional.kl_div(s.log_softmax(1), t.log_softmax(1), log_target=True, reduction="batchmean")
    return kl.item(), (t.argmax(1) == s.argmax(1)).float().mean().item()


@pytest.fixture(scope="module")
def teacher_path(trained_checkpoint):
    return trained_checkpoint


def test_distill_caches_teacher_outputs_per_sample_and_view(tmp_path, teacher_path, monkeypatch):
    """Each (view, sample) is computed once; the cached row is the teacher's answer on that very view."""
    teacher = load_model(checkpoint=teacher_path)
    prepared = []  # the width of every image the loader prepares

    def counted_transform_for(data_config, augment):
        transform = transform_for(data_config, augment)
        return lambda img: prepared.append(data_config["input_size"][-1]) or transform(img)

    monkeypatch.setattr("edgevision.compression.distill.transform_for", counted_transform_for)
    calls = []
    teacher.model.register_forward_hook(lambda m, i, o: calls.append(len(i[0])))
    student = load_model("vit_mini", weights="random", num_classes=10)  # 28 px: the teacher gets its own view
    source = small(96)
    cfg = DistillConfig(epochs=3, batch_size=32, workers=0, views=2, augment="light", warmup_steps=2)
    result = distill(teacher, student, source, tmp_path / "run", cfg, teacher_cache=tmp_path / "cache",
                     latency_runtime="none", progress=False)
    report = result.report
    assert sum(calls) == 2 * 96 + 1  # views 0, 1, then epoch 3 reuses view 0 (+1: the report's GMAC count)
    assert report.teacher_cache.computed == 192 and report.teacher_cache.reused == 96
    assert report.teacher_cache.filled == 1.0
    # epoch 3 reads view 0 from the cache: the loader skips the teacher's 32 px preprocessing
    assert prepared.count(28) == 3 * 96 and prepared.count(32) == 2 * 96

    # recompute one row: the teacher's preprocessing of sample 5 in view 1 (its own crop and flip)
    folder = next((tmp_path / "cache").iterdir())
    logits = np.load(folder / "logits.npy", mmap_mode="r")
    data = TransformedDataset(source, [transform_for(student.spec.data_config, "light"),
                                       transform_for(teacher.spec.data_config, "light")], seed=cfg.seed)
    data.set_view_seed(1)
    views, _, _ = data[5]
    assert views[0].shape[-1] == 28 and views[1].shape[-1] == 32
    with torch.no_grad():
        want = teacher.model.eval()(views[1][None]).numpy()[0]
    np.testing.assert_allclose(logits[1, 5].astype(np.float32), want, rtol=0.01, atol=0.02)
    assert not np.allclose(logits[0, 5], logits[1, 5])  # the two views differ

    # a second student reuses every row: the teacher never runs
    calls.clear()
    other = load_model("hybrid_mini", weights="random", num_classes=10)
    again = distill(teacher, other, source, tmp_path / "run2", cfg, teacher_cache=tmp_path / "cache",
                    latency_runtime="none", progress=False)
    assert calls == [1] and again.report.teacher_cache.computed == 0  # the GMAC count only


def test_teacher_cache_is_shared_across_seeds_only_without_augmentation(tmp_path, teacher_path):
    """The seed picks the augmented views; without augmentation every seed sees the same images."""
    teacher = load_model(checkpoint=teacher_path)
    source = small(64)

    def computed(run: str, augment: str, seed: int) -> int:
        cfg = DistillConfig(epochs=1, batch_size=32, workers=0, augment=augment, seed=seed, warmup_steps=1)
        student = load_model("vit_mini", weights="random", num_classes=10)
        result = distill(teacher, student, source, tmp_path / run, cfg, teacher_cache=tmp_path / "cache",
                         latency_runtime="none", progress=False)
        return result.report.teacher_cache.computed

    assert computed("plain-seed0", "none", 0) == 64
    assert computed("plain-seed1", "none", 1) == 0
    assert computed("light-seed0", "light", 0) == 64
    assert computed("light-seed1", "light", 1) == 64  # other crops and flips: other teacher answers
    assert len(list((tmp_path / "cache").iterdir())) == 3


def test_distilled_student_learns_from_the_teacher_and_feeds_compress(tmp_path, teacher_path):
    """Feature distillation on (projection 256 -> 96 widths), alpha 1 (labels unused); the student moves
    toward the teacher, the checkpoint holds only the student, and compress takes it as is."""
    teacher = load_model(checkpoint=teacher_path)
    student = load_model("vit_mini", weights="random", num_classes=10)
    source, test = small(800), small(300, "test")
    kl_before, _ = kl_and_agreement(teacher, student, test)
    cfg = DistillConfig(epochs=2, batch_size=50, workers=0, augment="none", alpha=1.0, feature_weight=1.0, lr=2e-3,
                        warmup_steps=5)
    result = distill(teacher, student, source, tmp_path / "run", cfg, eval_source=test, teacher_cache=False,
                     latency_runtime="openvino", threads=1, progress=False)
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["teacher_cache"] is None and report["config"]["feature_weight"] == 1.0
    kl_after, agreement = kl_and_agreement(teacher, load_model(checkpoint=result.checkpoint), test)
    assert kl_after < 0.7 * kl_before and agreement > 0.2  # held-out images: it learned the teacher's answers
    assert report["student"]["top1"] is not None and report["teacher"]["top1"] is not None
    assert report["latency"]["runtime"] == "openvino" and report["latency"]["student_p50_ms"] > 0
    ckpt = torch.load(tmp_path / "run" / STUDENT_FILE, weights_only=True)
    assert not any("projection" in k for k in ckpt["state_dict"])
    assert ckpt["training"]["distilled_from"]["name"] == "convnext_mini"
    # the teacher's exact weights, whatever file they came from
    assert ckpt["training"]["distilled_from"]["weights_sha256"] == weights_digest(teacher.model)

    from edgevision.pipeline.resolve import resolve
    from edgevision.pipeline.run import compress_model as compress

    loaded = load_model(checkpoint=tmp_path / "run")  # the run directory stands for its student.pt
    assert loaded.spec.checkpoint == result.checkpoint
    assert loaded.spec.classes == load_model(checkpoint=teacher_path).spec.classes
    recipe = resolve({}, None, {"target": "onnx", "int8": True, "eval_limit": 100, "calib_size": 32,
                                "benchmark_iters": 5})
    run = compress(loaded, test, recipe, tmp_path / "compressed", calib_source=source, progress=False)
    assert {v["name"] for v in run.report.to_dict()["variants"]} >= {"fp32", "int8"}


def test_distill_refuses_mismatched_pairs_and_finished_runs(tmp_path, teacher_path):
    teacher = load_model(checkpoint=teacher_path)
    with pytest.raises(EdgevisionError, match="10 outputs and the student 5"):
        distill(teacher, load_model("vit_mini", weights="random", num_classes=5), small(8), tmp_path / "a",
                latency_runtime="none", progress=False)
    unlabelled = open_source("builtin:photos")
    with pytest.raises(EdgevisionError, match="--alpha 1"):
        distill(teacher, load_model("vit_mini", weights="random", num_classes=10), unlabelled, tmp_path / "b",
                latency_runtime="none", progress=False)
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "report.json").write_text("{}")
    done = run_cli(["distill", "--teacher-checkpoint", str(teacher_path), "--student", "vit_mini",
                    "--student-weights", "random", "--data", "builtin:fashion-mnist", "--out", str(tmp_path / "c")])
    assert done.returncode == 2 and "finished distillation" in done.stderr and "Traceback" not in done.stderr


# --- torchrun --------------------------------------------------------------------------------------
def torchrun(args):
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
            "-m", "edgevision", *args]


def distill_args(teacher_path, out, cache, extra=()):
    return ["distill", "--teacher-checkpoint", str(teacher_path), "--student", "hybrid_mini", "--student-weights",
            "random", "--data", "builtin:fashion-mnist", "--limit", "256", "--eval-limit", "200",
            "--batch-size", "16", "--augment", "none", "--out", str(out), "--teacher-cache", str(cache),
            "--latency-runtime", "pytorch", "--workers", "0", "--threads", "1", "--json", *extra]


def test_seed_repeats_a_random_student_run(tmp_path, teacher_path):
    """--seed fixes the random student's initial weights as well as the data order."""
    from edgevision.models import read_checkpoint

    def student_weights(run: str, seed: str) -> dict:
        done = run_cli(distill_args(teacher_path, tmp_path / run, tmp_path / "cache",
                                    ["--epochs", "1", "--limit", "64", "--seed", seed]))
        assert done.returncode == 0, done.stderr[-2000:]
        return read_checkpoint(tmp_path / run / STUDENT_FILE)[0]

    first, again, other = student_weights("a", "3"), student_weights("b", "3"), student_weights("c", "4")
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)


def test_torchrun_two_processes_gloo_writes_one_checkpoint(tmp_path, teacher_path):
    out = tmp_path / "run"
    done = subprocess.run(torchrun(distill_args(teacher_path, out, tmp_path / "cache", ["--epochs", "2"])),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)  # one JSON document: only rank 0 prints
    assert report["processes"] == 2
    assert report["teacher_cache"]["computed"] == 256  # each rank did its half, once
    assert report["teacher_cache"]["reused"] == 256
    assert [h["epoch"] for h in report["history"]] == [1, 2]
    assert sorted(p.name for p in out.iterdir()) == ["report.json", "student.pt"]  # no resume state, no rank files
    ckpt = torch.load(out / "student.pt", weights_only=True)
    assert ckpt["training"]["processes"] == 2
    student = load_model(checkpoint=out / "student.pt")
    fresh = load_model("hybrid_mini", weights="random", num_classes=10)
    changed = [k for k, v in student.model.state_dict().items() if not torch.equal(v, fresh.model.state_dict()[k])]
    assert len(changed) > 10  # trained, not the initial weights
    assert report["student"]["top1"] > 10.0 and report["latency"]["student_p50_ms"] > 0

    # the run directory feeds export directly: the hybrid student as a TensorRT-ready bundle. Whether its INT8
    # holds the default budget (1 point on 100 images) is this 2-epoch student's to say, and two processes'
    # training differs from run to run (it missed in one run of five): exit 3 says so, with the bundle written
    bundle = tmp_path / "bundle"
    exported = run_cli(["export", str(out), "--target", "jetson", "--data", "builtin:fashion-mnist", "--calib-data",
                        "builtin:fashion-mnist", "--calib-size", "32", "--limit", "100", "--out", str(bundle),
                        "--json"])
    assert exported.returncode in (0, 3), exported.stderr[-2000:]
    bundle_report = json.loads(exported.stdout)
    assert bundle_report["model"]["timm_name"] == "hybrid_cnn_vit_mini"
    assert (bundle / "model.onnx").is_file()
    assert bundle_report["status"] == ("ok" if exported.returncode == 0 else "max_drop_not_met")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_two_nodes_keep_one_teacher_cache_each(tmp_path, teacher_path):
    """Two torchrun agents on this machine as nodes 0 and 1 (one process each, static rendezvous)."""
    out, cache, port = tmp_path / "run", tmp_path / "cache", free_port()
    args = distill_args(teacher_path, out, cache, ["--epochs", "2", "--limit", "128"])
    agents = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node",
                                "1", "--node_rank", str(node), "--master_addr", "127.0.0.1", "--master_port",
                                str(port), "-m", "edgevision", *args],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for node in (0, 1)]
    outputs = [a.communicate(timeout=600) for a in agents]
    assert [a.returncode for a in agents] == [0, 0], outputs[0][1][-2000:] + outputs[1][1][-2000:]
    assert outputs[1][0].strip() == ""  # node 1 holds no rank 0: it prints nothing
    report = json.loads(outputs[0][0])
    assert report["processes"] == 2
    folders = sorted(p.name for p in cache.iterdir())
    assert len(folders) == 2 and folders[0].endswith("-node0") and folders[1].endswith("-node1")
    filled = [np.load(cache / f / "filled.npy")[0].astype(bool) for f in folders]
    # epoch 1: each node computed the half its rank drew; the two caches together hold every sample
    assert (filled[0] | filled[1]).all() and filled[0].sum() >= 64 and filled[1].sum() >= 64
    # epoch 2 reshuffles across ranks: a sample another node computed is computed again, never read across nodes
    cached = report["teacher_cache"]
    assert cached["computed"] + cached["reused"] == 256
    assert cached["computed"] == int(filled[0].sum() + filled[1].sum())
    assert sorted(p.name for p in out.iterdir()) == ["report.json", "student.pt"]


def kill_tree(pid: int) -> None:
    """SIGKILL a process and all its descendants (read from /proc: no cleanup handler runs)."""
    children: dict[int, list[int]] = {}
    for stat in os.listdir("/proc"):
        if stat.isdigit():
            try:
                fields = open(f"/proc/{stat}/stat").read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append(int(stat))
    todo, tree = [pid], []
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(children.get(p, []))
    for p in tree:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_torchrun_run_killed_mid_epoch_resumes(tmp_path, teacher_path):
    """SIGKILL to torchrun and both workers mid-epoch; the same command continues from the last save."""
    out = tmp_path / "run"
    args = distill_args(teacher_path, out, tmp_path / "cache", ["--epochs", "3", "--save-every", "1",
                                                                "--limit", "1024"])
    proc = subprocess.Popen(torchrun(args), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = state_path(out / STUDENT_FILE)
    deadline, saved = time.time() + 300, None
    while time.time() < deadline and proc.poll() is None:
        if state.exists():
            try:
                saved = torch.load(state, weights_only=True)
            except Exception:  # noqa: BLE001 - caught mid-rename: try again
                saved = None
            if saved and saved["step"] > 0:
                break
        time.sleep(0.2)
    kill_tree(proc.pid)  # torchrun starts its workers in sessions of their own: kill each of them
    proc.wait()
    assert saved is not None and saved["step"] > 0 and saved["epoch"] < 3, "no mid-epoch state was saved"
    assert not (out / "report.json").exists()
    saved = torch.load(state, weights_only=True)  # the last save before the kill
    done = subprocess.run(torchrun(args), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["resumed_from"] == {"epoch": saved["epoch"], "step": saved["step"]}
    assert [h["epoch"] for h in report["history"]] == [1, 2, 3]  # finished epochs kept, none repeated
    assert not state.exists() and (out / "student.pt").exists()


# --- the real ViT-L ---------------------------------------------------------------------------------
@pytest.mark.slow
def test_vit_l_teacher_one_distillation_step_on_cpu(tmp_path):
    """The real ViT-L/16 (304 M parameters, random weights: nothing is downloaded) teaches ViT-S for one step."""
    teacher = load_model("vit_l", weights="random", num_classes=10)
    assert sum(p.numel() for p in teacher.model.parameters()) > 300e6
    assert teacher.spec.timm_name == "vit_large_patch16_224" and teacher.spec.input_size == (3, 224, 224)
    student = load_model("vit_s", weights="random", num_classes=10)
    before = {k: v.clone() for k, v in student.model.state_dict().items()}
    cfg = DistillConfig(epochs=1, batch_size=2, workers=0, augment="none", warmup_steps=1)
    result = distill(teacher, student, small(2), tmp_path / "run", cfg, teacher_cache=False,
                     latency_runtime="none", progress=False)
    assert result.report.history[0].train_loss > 0
    after = load_model(checkpoint=result.checkpoint).model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_distill_on_gpu_under_bf16(tmp_path, teacher_path):
    teacher = load_model(checkpoint=teacher_path)
    student = load_model("vit_mini", weights="random", num_classes=10)
    result = distill(teacher, student, small(256), tmp_path / "run", DistillConfig(epochs=1, batch_size=64, workers=0),
                     teacher_cache=tmp_path / "cache", latency_runtime="none", device="cuda", progress=False)
    assert result.report.device.startswith("cuda") and np.isfinite(result.report.history[0].train_loss)


def test_teacher_cache_files_are_created_once_and_shared(tmp_path):
    from edgevision.training.distributed import DistEnv

    key = {"teacher": "t", "data": "d"}
    a = TeacherCache.open(tmp_path, key, views=2, size=10, classes=3, feature_dim=None, env=DistEnv())
    a.write(1, np.array([4, 7]), np.ones((2, 3), np.float16), None)
    a.flush()
    b = TeacherCache.open(tmp_path, key, views=2, size=10, classes=3, feature_dim=None, env=DistEnv())
    assert b.lookup(1, np.array([4, 5, 7])).tolist() == [True, False, True]
    assert b.read(1, np.array([7]))[0].tolist() == [[1, 1, 1]]
    other = TeacherCache.open(tmp_path, {**key, "data": "e"}, views=2, size=10, classes=3, feature_dim=None,
                              env=DistEnv())
    assert other.folder != a.folder and not other.lookup(1, np.array([4])).any()

