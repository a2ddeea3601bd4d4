"""What a TensorRT engine is tied to: TensorRT version, GPU, L4T release (Jetson), CPU architecture.

Standard library only: edgevision imports it, and a Jetson bundle carries this very file so that its
build_engine.sh records the same fields on a device where edgevision is not installed:
    python3 device_identity.py model.engine "built by" ['{"precision": "int8", ...}']   # writes model.engine.json
The optional third argument is build_engine.sh's decision (which precision it kept, and the timings it kept it on).
"""
from __future__ import annotations

import json
import platform
import sys
from pathlib import Path


def read_text(path: str) -> str | None:
    try:
        return Path(path).read_text(errors="replace").strip().strip("\x00") or None
    except OSError:
        return None


def tensorrt_version() -> str | None:
    try:
        import tensorrt
    except ImportError:
        return None
    return tensorrt.__version__


def identity(trt_version: str | None = None) -> dict:
    """Jetson boards name themselves in the device tree; L4T writes its release to /etc/nv_tegra_release."""
    return {"tensorrt": trt_version, "gpu": read_text("/proc/device-tree/model"),
            "l4t": read_text("/etc/nv_tegra_release"), "machine": platform.machine()}


def write_engine_json(engine: str, built_by: str, decision: dict | None = None) -> Path:
    path = Path(engine + ".json")
    meta = {**identity(tensorrt_version()), "built_by": built_by, **({"decision": decision} if decision else {})}
    path.write_text(json.dumps(meta, indent=2) + "\n")
    return path


if __name__ == "__main__":
    write_engine_json(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "build_engine.sh",
                      json.loads(sys.argv[3]) if len(sys.argv) > 3 else None)
