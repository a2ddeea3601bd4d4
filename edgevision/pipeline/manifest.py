"""manifest.json of a run directory: versions, machine, content, and a checksum of every other file."""
from __future__ import annotations

import platform
import time
from pathlib import Path
from typing import Any

from edgevision.io import sha256, write_json
from edgevision.measure.bench import available_cores, cpu_name


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in ("edgevision", "torch", "timm", "openvino", "nncf", "onnx", "onnxruntime", "tensorrt"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def write_manifest(run_dir: Path, content: dict[str, Any]) -> dict[str, Any]:
    """manifest.json: versions, machine, the given content, and sha256 + size of every other file."""
    files = {}
    for path in sorted(p for p in run_dir.rglob("*") if p.is_file() and p.name != "manifest.json"):
        files[str(path.relative_to(run_dir))] = {"sha256": sha256(path), "bytes": path.stat().st_size}
    manifest = {"created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "versions": versions(),
                "machine": {"cpu": cpu_name(), "cores": available_cores()}, **content, "files": files}
    write_json(run_dir / "manifest.json", manifest)
    return manifest
