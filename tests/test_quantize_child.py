"""The quantization child process (quantization/child.py, worker.py): started once, kept for the jobs of its
parent, one-line errors, gone when idle and with its parent."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from edgevision.errors import EdgevisionError
from edgevision.quantization import child as child_module
from edgevision.quantization.child import quantize_child
from edgevision.quantization.engine_names import EDGEVISION_ENGINE
from edgevision.quantization.onnxruntime import PROFILES, JobOutput, QuantizeJob, quantize_qdq, run_quantize_job
from edgevision.runtimes.onnxruntime import export_onnx

CALIBRATION = [np.random.default_rng(i).standard_normal((1, 3, 8, 8)).astype(np.float32) for i in range(4)]


def small_graph(folder: Path) -> Path:
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(4 * 6 * 6, 5)).eval()
    return export_onnx(model, (3, 8, 8), folder / "f.onnx", dynamic_batch=True)


def child_pid() -> int:
    return quantize_child(EDGEVISION_ENGINE)._process.pid


def is_quantized(path: Path) -> bool:
    return "QuantizeLinear" in {n.op_type for n in onnx.load(str(path)).graph.node}


def test_jobs_run_one_after_another_in_one_child_and_leave_the_callers_directory_as_it_was(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fp32 = small_graph(tmp_path)
    before = set(tmp_path.iterdir())
    quantize_qdq(fp32, tmp_path / "a.onnx", CALIBRATION, PROFILES["cpu"])
    first = child_pid()
    quantize_qdq(fp32, tmp_path / "b.onnx", CALIBRATION, PROFILES["cpu-compute"], exclude_nodes=["x"])
    assert child_pid() == first
    assert is_quantized(tmp_path / "a.onnx") and is_quantized(tmp_path / "b.onnx")
    assert set(tmp_path.iterdir()) - before == {tmp_path / "a.onnx", tmp_path / "b.onnx"}


def test_a_failed_job_is_one_line_and_the_same_child_runs_the_next(tmp_path):
    (tmp_path / "broken.onnx").write_text("not an ONNX graph")
    broken = QuantizeJob(EDGEVISION_ENGINE, str(tmp_path / "broken.onnx"), "minmax", [],
                         [JobOutput(str(tmp_path / "out.onnx"), None, PROFILES["cpu"])])
    done = run_quantize_job(broken, CALIBRATION)
    assert done.returncode == 1 and done.stderr and "\n" not in done.stderr
    pid = child_pid()
    quantize_qdq(small_graph(tmp_path), tmp_path / "q.onnx", CALIBRATION, PROFILES["cpu"])
    assert child_pid() == pid and is_quantized(tmp_path / "q.onnx")


def test_a_killed_child_is_replaced_for_the_next_job(tmp_path):
    fp32 = small_graph(tmp_path)
    quantize_qdq(fp32, tmp_path / "a.onnx", CALIBRATION, PROFILES["cpu"])
    killed = child_pid()
    os.kill(killed, signal.SIGKILL)
    os.waitid(os.P_PID, killed, os.WEXITED | os.WNOWAIT)  # dead (not yet reaped)
    quantize_qdq(fp32, tmp_path / "b.onnx", CALIBRATION, PROFILES["cpu"])
    assert child_pid() != killed and is_quantized(tmp_path / "b.onnx")


def test_an_idle_child_exits_and_the_next_job_starts_another(tmp_path, monkeypatch):
    monkeypatch.setattr(child_module, "IDLE_EXIT_S", 1)
    monkeypatch.setattr(child_module, "_CHILDREN", {})
    fp32 = small_graph(tmp_path)
    quantize_qdq(fp32, tmp_path / "a.onnx", CALIBRATION, PROFILES["cpu"])
    idle = quantize_child(EDGEVISION_ENGINE)._process
    assert idle.wait(timeout=30) == 0  # exited by itself, with no job
    quantize_qdq(fp32, tmp_path / "b.onnx", CALIBRATION, PROFILES["cpu"])
    assert child_pid() != idle.pid and is_quantized(tmp_path / "b.onnx")
    quantize_child(EDGEVISION_ENGINE).close()


@pytest.mark.parametrize("how", ["exits", "is killed"])
def test_the_child_ends_with_its_parent(tmp_path, how):
    """A parent that exits closes its child; one killed (SIGKILL: no atexit) leaves it reading the end of its
    stdin, and it exits too: no quantization process outlives the run that started it."""
    small_graph(tmp_path)
    script = ("import sys, time, numpy as np\n"
              "from pathlib import Path\n"
              "from edgevision.quantization.child import quantize_child\n"
              "from edgevision.quantization.onnxruntime import PROFILES, quantize_qdq\n"
              f"folder = Path({str(tmp_path)!r})\n"
              "quantize_qdq(folder / 'f.onnx', folder / 'q.onnx', [np.ones((1, 3, 8, 8), np.float32)], PROFILES['cpu'])\n"
              "print(quantize_child('edgevision')._process.pid, flush=True)\n"
              f"time.sleep({60 if how == 'is killed' else 0})\n")
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    if how == "is killed":
        parent.kill()
    parent.wait(timeout=60)
    parent.stdout.close()
    deadline = time.monotonic() + 20
    while Path(f"/proc/{child}").exists() and _state(child) != "Z" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not Path(f"/proc/{child}").exists() or _state(child) == "Z"


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return "gone"


def test_an_error_in_the_child_reaches_the_caller_as_a_one_line_edgevision_error(tmp_path):
    fp32 = small_graph(tmp_path)
    with pytest.raises(EdgevisionError, match="ONNX Runtime quantization failed: .+") as caught:
        quantize_qdq(fp32, tmp_path / "q.onnx", [np.ones((1, 3, 4, 4), np.float32)], PROFILES["cpu"])
    assert "\n" not in str(caught.value.args[0])
