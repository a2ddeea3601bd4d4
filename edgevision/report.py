"""Run directories: written in a temporary place and moved into place whole; manifest and report."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import shutil
import time
from pathlib import Path
from typing import Any, Iterator

from edgevision.errors import OutputExistsError


@contextlib.contextmanager
def staged_directory(final: Path, force: bool = False) -> Iterator[Path]:
    """Yield an empty temporary directory beside `final`; on success it replaces `final` in one rename.

    A failure or Ctrl-C removes the temporary directory and leaves `final` as it was. An existing `final`
    is replaced only with `force`, and only once the new run is complete.
    """
    final = Path(final)
    if final.exists() and not force:
        raise OutputExistsError(f"{final} already exists", "pass --force to replace it, or choose another --out")
    final.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(final)
    tmp = final.parent / f".{final.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        old = None
        if final.exists():
            old = final.parent / f".{final.name}.old-{os.getpid()}"
            os.replace(final, old)
        os.replace(tmp, final)
        if old is not None and old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
        elif old is not None:
            old.unlink()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _remove_stale_partials(final: Path) -> None:
    """A run killed with SIGKILL cannot clean up: remove the partial directories of processes that are gone."""
    for partial in final.parent.glob(f".{final.name}.partial-*"):
        try:
            pid = int(partial.name.rsplit("-", 1)[1])
            os.kill(pid, 0)  # still running: not ours to remove
        except ValueError:
            continue
        except ProcessLookupError:
            shutil.rmtree(partial, ignore_errors=True)
        except PermissionError:
            continue


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


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
    from edgevision.bench import available_cores, cpu_model

    files = {}
    for path in sorted(p for p in run_dir.rglob("*") if p.is_file() and p.name != "manifest.json"):
        files[str(path.relative_to(run_dir))] = {"sha256": sha256(path), "bytes": path.stat().st_size}
    manifest = {"created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "versions": versions(),
                "machine": {"cpu": cpu_model(), "cores": available_cores()}, **content, "files": files}
    write_json(run_dir / "manifest.json", manifest)
    return manifest


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, default=json_default) + "\n", encoding="utf-8")


def json_default(obj):
    """numpy scalars and paths, which reports carry, as JSON values."""
    import numpy as np

    if isinstance(obj, (np.integer, np.floating)):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def fmt(value: Any, digits: int = 2, suffix: str = "") -> str:
    """A table cell: '-' for a missing value, floats to `digits` places."""
    if value is None:
        return "-"
    return (f"{value:.{digits}f}" if isinstance(value, float) else str(value)) + suffix


def variants_table(report: dict[str, Any]):
    """The accuracy-drop vs speedup table of a report, as a rich Table."""
    from rich.table import Table

    f = fmt
    table = Table(title=f"{report['model']['name']} on {report['data']['spec']} ({report['data']['images']} images)")
    for col in ("variant", "runtime", "top-1 %", "drop", "agreement %", "KL", "p50 ms", "p90 ms", "speedup",
                "size MB"):
        table.add_column(col, justify="left" if col in ("variant", "runtime") else "right", no_wrap=True)
    for v in report["variants"]:
        table.add_row(v["name"], v["runtime"], f(v["top1"]), f(v["top1_drop"]), f(v["agreement"]),
                      f(v["kl"], 4), f(v["latency_ms_p50"]), f(v["latency_ms_p90"]), f(v["speedup"], 2, "x"),
                      f(v["size_mb"], 1))
    not_timed = report.get("benchmark", {}).get("not_timed")
    if not_timed:
        sim = any("tensorrt-sim" in k for k in not_timed)
        table.caption = (f"not timed: {', '.join(not_timed)}" + (" (tensorrt-sim = the Q/DQ graph TensorRT will "
                         "build, run by ONNX Runtime on this CPU: accuracy only)" if sim else ""))
    return table
