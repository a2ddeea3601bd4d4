"""Writing files so that a failure never leaves half of one: atomic writes, staged run directories, JSON.

Every file edgevision writes for a user goes through here: a temporary name beside the target, then one
rename. A run directory is built in a hidden folder beside its final path and renamed into place whole.
A full disk becomes a one-line error naming the path, and nothing is left behind.
"""
from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from edgevision.errors import EdgevisionError, OutputExistsError
from edgevision.typed import to_data

# Below this much free space a failure while writing is reported as a full disk: some libraries (OpenVINO's
# IR writer) raise their own error types instead of OSError(ENOSPC).
LOW_DISK_BYTES = 16 << 20


class DiskFullError(EdgevisionError):
    """No space left on the device that edgevision was writing to."""


def cache_dir() -> Path:
    """edgevision's cache (trained Fashion-MNIST models, teacher outputs): $EDGEVISION_CACHE or ~/.cache."""
    return Path(os.environ.get("EDGEVISION_CACHE", "~/.cache/edgevision")).expanduser()


def _temporary_beside(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp)` on a temporary file beside `path`, then rename it to `path`."""
    path = Path(path)
    tmp = _temporary_beside(path)
    try:
        with disk_full_as_error(path):
            write(tmp)
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json(path: str | Path, data: Any) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2, default=json_default) + "\n")


def json_default(obj):
    """numpy scalars and paths, which reports carry, and the typed records (`to_dict()`, else any dataclass
    through typed.to_data), as JSON values."""
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_data(obj)
    if isinstance(obj, (np.integer, np.floating)):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _low_on_disk(path: Path) -> bool:
    for candidate in (path, *path.parents):
        if candidate.exists():
            try:
                return shutil.disk_usage(candidate).free < LOW_DISK_BYTES
            except OSError:
                return False
    return False


@contextlib.contextmanager
def disk_full_as_error(path: Path) -> Iterator[None]:
    """ENOSPC, or any failure while the disk under `path` is (nearly) full, becomes one DiskFullError."""
    try:
        yield
    except EdgevisionError:
        raise
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFullError(f"no space left on device writing {path}",
                                "free some space or choose another --out") from None
        raise
    except Exception:
        if _low_on_disk(Path(path)):
            raise DiskFullError(f"no space left on device writing {path}",
                                "free some space or choose another --out") from None
        raise


def make_parent(path: Path) -> None:
    """Create `path`'s parent folders; a file standing where a folder must go is a one-line error."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in (path.parent, *path.parent.parents) if p.exists() and not p.is_dir()), path.parent)
        raise EdgevisionError(f"cannot create {path}: {blocker} is a file, not a folder",
                              "choose another --out, or move that file") from None


@contextlib.contextmanager
def staged_directory(final: Path, force: bool = False) -> Iterator[Path]:
    """Yield an empty temporary directory beside `final`; on success it replaces `final` in one rename.

    A failure or Ctrl-C removes the temporary directory and leaves `final` as it was. An existing `final`
    is replaced only with `force`, and only once the new run is complete.
    """
    final = Path(final)
    if final.exists() and not force:
        raise OutputExistsError(f"{final} already exists", "pass --force to replace it, or choose another --out")
    make_parent(final)
    _remove_stale_partials(final)
    tmp = final.parent / f".{final.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with disk_full_as_error(final):
            tmp.mkdir()
            yield tmp
            _replace_directory(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _replace_directory(new: Path, final: Path) -> None:
    old = None
    if final.exists():
        old = final.parent / f".{final.name}.old-{os.getpid()}"
        os.replace(final, old)
    os.replace(new, final)
    if old is not None and old.is_dir():
        shutil.rmtree(old, ignore_errors=True)
    elif old is not None:
        old.unlink()


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
