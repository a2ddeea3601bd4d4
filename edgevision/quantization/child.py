"""The quantization child process (quantization/worker.py), started once per engine and kept while jobs come:
a job is one line to its stdin and one JSON line back. A child that dies (killed, out of memory) fails its job
with a one-line error; one idle for IDLE_EXIT_S exits by itself; either way the next job starts a new one, and
the children end with this process."""
from __future__ import annotations

import atexit
import json
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

# a child with no job for this long exits (its imports hold ~0.6 GB while it waits); the next job starts another
IDLE_EXIT_S = 120
_SCRATCH: list[tempfile.TemporaryDirectory] = []


def process_scratch() -> Path:
    """This process's scratch folder for quantization, removed when it exits: the children's stderr, the
    calibration ranges (onnxruntime.calibration_folder)."""
    if not _SCRATCH:
        _SCRATCH.append(tempfile.TemporaryDirectory(prefix="edgevision-quantize-"))
    return Path(_SCRATCH[0].name)


class QuantizeChild:
    def __init__(self, engine: str):
        self.engine = engine
        self._process: subprocess.Popen | None = None
        self._owner = 0  # the pid that started it: a forked copy of this process starts its own
        self._lock = threading.Lock()

    def run(self, job_file: Path) -> subprocess.CompletedProcess:
        """Run the job.json at `job_file` (its folder is the job's scratch folder); returncode 0 when it
        finished, else stderr holds the reason in one line."""
        with self._lock:
            process, reply = self._sent(job_file)
            if not reply and process.returncode == 0:  # it had been idle too long and exited before reading it
                process, reply = self._sent(job_file)
        if not reply:
            return subprocess.CompletedProcess(process.args, process.returncode or 1, "",
                                               f"the quantization process exited with code {process.returncode}")
        done = json.loads(reply)
        return subprocess.CompletedProcess(process.args, done["returncode"], "", done["error"])

    def _sent(self, job_file: Path) -> tuple[subprocess.Popen, str]:
        """The job sent to a running child, and its reply line ("" when the child exited; then it is reaped)."""
        process = self._started()
        try:
            process.stdin.write(f"{Path(job_file).resolve()}\n")
            process.stdin.flush()
            reply = process.stdout.readline()
        except BrokenPipeError:
            reply = ""
        if not reply:
            self.close()
        return process, reply

    def _started(self) -> subprocess.Popen:
        if self._process is not None and (self._owner != os.getpid() or self._process.poll() is not None):
            self.close()
        if self._process is None:
            with open(process_scratch() / f"{self.engine}.log", "ab") as log:
                self._process = subprocess.Popen(
                    [sys.executable, "-m", "edgevision.quantization.worker", "--serve", str(IDLE_EXIT_S)],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True, cwd=process_scratch())
            self._owner = os.getpid()
        return self._process

    def close(self) -> None:
        """End the child (stdin closed: it finishes the job it is on, then exits) and close its pipes."""
        process, self._process = self._process, None
        if process is None or self._owner != os.getpid():
            return  # none, or a forked copy's: the process that started it ends it
        for pipe in (process.stdin, process.stdout):
            try:
                pipe.close()
            except OSError:  # a dead child's stdin can fail to flush: nothing was waiting in it
                pass
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


_CHILDREN: dict[str, QuantizeChild] = {}


def quantize_child(engine: str) -> QuantizeChild:
    """This process's child for `engine` (one per engine: Model Optimizer's imports stay out of ONNX Runtime's)."""
    if engine not in _CHILDREN:
        _CHILDREN[engine] = QuantizeChild(engine)
    return _CHILDREN[engine]


@atexit.register
def _close_children() -> None:
    for child in _CHILDREN.values():
        child.close()
