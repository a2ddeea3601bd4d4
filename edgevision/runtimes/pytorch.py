"""PyTorch eager: the float reference every speedup is measured against."""
from __future__ import annotations

import contextlib
from typing import Any

import numpy as np

from edgevision.runtimes import Runner, RunnerInfo, register_runner


@contextlib.contextmanager
def torch_threads(threads: int | None):
    """Run the block at `threads` torch threads, then restore the process's setting (None: leave it)."""
    import torch

    previous = torch.get_num_threads()
    if threads is None or threads == previous:
        yield
        return
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class TorchRunner(Runner):
    """Runs a torch module at its own thread count; the process's thread setting is restored after each call."""

    runtime = "pytorch"

    def __init__(self, model, threads: int | None = None, device: str = "cpu"):
        import torch  # heavy: imported when a runner is made

        self.torch, self.device, self.threads = torch, torch.device(device), threads
        self.model = model.eval().to(self.device)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        torch = self.torch
        with torch_threads(self.threads), torch.inference_mode():
            out = self.model(torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device))
        return out.float().cpu().numpy()

    def info(self) -> RunnerInfo:
        return RunnerInfo(self.runtime, self.torch.__version__, str(self.device),
                          self.threads or self.torch.get_num_threads(), "fp32")


@register_runner("pytorch")
def make_torch_runner(model, threads: int | None = None, device: str = "cpu", **_: Any) -> TorchRunner:
    return TorchRunner(model, threads=threads, device=device)
