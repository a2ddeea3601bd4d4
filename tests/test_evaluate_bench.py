import numpy as np
import pytest

from edgevision.errors import EdgevisionError
from edgevision.measure.bench import benchmark, compare_latency
from edgevision.measure.evaluate import fidelity, topk_accuracy
from edgevision.runtimes import Runner, create_runner
from edgevision.typed import to_data


def test_topk_accuracy():
    logits = np.array([[0.1, 0.9, 0.0], [0.8, 0.1, 0.3], [0.2, 0.3, 0.5]])
    labels = np.array([1, 2, 0])
    assert topk_accuracy(logits, labels, 1) == pytest.approx(100 / 3)
    assert topk_accuracy(logits, labels, 2) == pytest.approx(200 / 3)
    assert topk_accuracy(logits, labels, 5) == 100.0  # k above the class count means all


def test_fidelity_of_identical_and_of_perturbed_logits():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((200, 10)).astype(np.float32)
    same = fidelity(ref, ref.copy())
    assert same["agreement"] == 100.0 and same["kl"] == pytest.approx(0, abs=1e-9)
    assert same["cosine"] == pytest.approx(1.0)
    noisy = fidelity(ref, ref + rng.standard_normal(ref.shape).astype(np.float32))
    assert 20 < noisy["agreement"] < 95 and noisy["kl"] > 0.05 and noisy["cosine"] < 0.9
    with pytest.raises(ValueError):
        fidelity(ref, ref[:, :5])


class SleepRunner(Runner):
    """A runner whose cost is known: ~2 ms a call, plus 0.1 ms per image."""

    runtime = "sleep"

    def __call__(self, batch):
        import time

        time.sleep(0.002 + 0.0001 * len(batch))
        return np.zeros((len(batch), 3), np.float32)


def test_benchmark_measures_what_the_runner_costs():
    result = benchmark(SleepRunner(), (3, 8, 8), warmup=2, iters=20, throughput_batch=50)
    assert result.iterations >= 20
    assert 2.0 <= result.latency_ms_p50 < 6.0
    assert result.latency_ms_p50 <= result.latency_ms_p90 <= result.latency_ms_p99
    assert 50 / 0.012 < result.throughput_ips < 50 / 0.007  # 7 ms per batch of 50, minus overheads
    assert to_data(result.runner) == {"runtime": "sleep"} and result.cpu


class Spinner(Runner):
    """A runner that leaves the machine busy after each call, as PyTorch's OpenMP threads do."""

    runtime = "spinner"

    def __init__(self, machine: dict):
        self.machine = machine

    def __call__(self, batch):
        self.machine["busy"] = True
        return np.zeros((len(batch), 3), np.float32)


class Slowed(SleepRunner):
    """A SleepRunner whose next call costs 20 ms more when it follows a Spinner's call."""

    def __init__(self, machine: dict):
        self.machine = machine

    def __call__(self, batch):
        import time

        if self.machine.pop("busy", False):
            time.sleep(0.02)
        return super().__call__(batch)


def test_side_by_side_timing_leaves_out_the_call_after_another_runner():
    machine: dict = {}
    # one timed call per runner and round: without an untimed call first, every timed call of `slowed`
    # would follow the spinner's and cost 22 ms
    result = compare_latency({"spinner": Spinner(machine), "slowed": Slowed(machine)}, (3, 8, 8),
                             warmup=0, iters=5, rounds=5)
    assert result["slowed"].iterations == 5
    assert result["slowed"].latency_ms_p99 < 15.0


def test_pytorch_runner_matches_the_module_and_sets_threads():
    import torch

    from edgevision.models import load_model

    loaded = load_model("convnext_mini", num_classes=10)
    runner = create_runner("pytorch", loaded.model, threads=1)
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        expected = loaded.model(torch.from_numpy(x)).numpy()
    assert np.allclose(runner(x), expected, atol=1e-6)
    assert runner.info().threads == 1 and runner.info().runtime == "pytorch"


def test_unknown_runtime_lists_the_known_ones():
    with pytest.raises(EdgevisionError, match="choose one of onnxruntime, openvino, pytorch, tensorrt"):
        create_runner("tflite", None)


def test_onnxruntime_sessions_stop_spinning_after_a_run(tmp_path):
    # left spinning, a session's threads took the cores from the next runner timed side by side (2-3x slower)
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "m.onnx"))
    runner = create_runner("onnxruntime", tmp_path / "m.onnx", threads=2)
    options = runner.session.get_session_options()
    assert options.get_session_config_entry("session.force_spinning_stop") == "1"
    assert options.intra_op_num_threads == 2
    np.testing.assert_array_equal(runner(np.array([[-1, 0, 2, -3]], np.float32)), [[0, 0, 2, 0]])
