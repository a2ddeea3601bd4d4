"""PyTorch eager: the float reference every speedup is measured against."""
from __future__ import annotations

from typing import Any

import numpy as np

from edgevision.backends import Runner, register_runner


class TorchRunner(Runner):
    runtime = "pytorch"

    def __init__(self, model, threads: int | None = None, device: str = "cpu"):
        import torch

        if threads is not None:
            torch.set_num_threads(threads)
        self.torch, self.device = torch, torch.device(device)
        self.model = model.eval().to(self.device)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        torch = self.torch
        with torch.inference_mode():
            out = self.model(torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device))
        return out.float().cpu().numpy()

    def info(self) -> dict[str, Any]:
        torch = self.torch
        return {"runtime": self.runtime, "version": torch.__version__, "device": str(self.device),
                "threads": torch.get_num_threads(), "precision": "fp32"}


@register_runner("pytorch")
def make_torch_runner(model, threads: int | None = None, device: str = "cpu", **_: Any) -> TorchRunner:
    return TorchRunner(model, threads=threads, device=device)
