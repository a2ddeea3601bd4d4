"""The CPU deploy bundle's shared code: its manifest and decision as types, the model's preprocessing in numpy
and Pillow, checksums, fidelity measures, the runtimes' runners and the choice rule.

Runs on the device with numpy and Pillow only (onnxruntime and openvino are imported when a candidate needs
them), and inside edgevision for `export --target cpu` and `deploy-check`. It mirrors a few things edgevision
has in richer form (runners, the selection rule), because the device must not need edgevision.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import platform
import shutil
import tempfile
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image

MANIFEST_VERSION = 1
MANIFEST_FILE, DECISION_FILE, SAMPLE_FILE = "manifest.json", "decision.json", "sample.npz"
PICK_NAMES = {".onnx": "model.onnx", ".xml": "model.xml", ".bin": "model.bin"}  # the pick's fixed names
NOISE = 0.03  # two medians within 3% of each other are not told apart (as edgevision's own selection)
X86_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "avx512_bf16", "amx_bf16")
ARM_FLAGS = ("asimddp", "i8mm", "bf16")


class BundleError(Exception):
    """A problem with the bundle or the command line: one line naming it and the fix (exit code 2)."""

    def __init__(self, message: str, fix: str = ""):
        super().__init__(f"{message}{f'; {fix}' if fix else ''}")


# ---- types: manifest.json's "deploy" section and decision.json -------------------------------------------


@dataclass
class Preprocessing:
    """timm's evaluation transform, as data: resize the shorter side to size / crop_pct, centre crop, normalise."""

    input_size: list[int]  # C, H, W
    interpolation: str = "bicubic"
    mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])
    crop_pct: float = 0.875
    crop_mode: str = "center"  # center | squash


@dataclass
class HostMeasurement:
    """What the building machine measured for a candidate (its compress/export report)."""

    top1: float | None
    drop: float
    agreement: float
    latency_ms_p50: float | None
    speedup: float | None  # over PyTorch eager FP32 on that machine
    selected: bool


@dataclass
class Candidate:
    key: str  # name/runtime, as in report.json
    runtime: str  # onnxruntime | openvino
    precision: str  # fp32 | int8
    files: dict[str, str]  # bundle-relative path -> sha256
    options: dict[str, str] = field(default_factory=dict)  # runner settings, e.g. {"precision": "bf16"}
    format: str | None = None  # u8s8, u8s8-rr (7-bit weights), s8s8 for ONNX Runtime INT8
    host: HostMeasurement | None = None


@dataclass
class Sample:
    file: str
    sha256: str
    images: int
    labelled: bool
    source: str  # the evaluation data it was drawn from


@dataclass
class HostInfo:
    cpu: str
    features: list[str]
    tier: str | None
    threads: int
    selected: str | None  # the host's own pick for this model


@dataclass
class BundleManifest:
    version: int
    model: str
    preprocessing: Preprocessing
    classes: list[str] | None
    max_drop: float | None  # points; None: no accuracy budget
    metric: str  # top1 (labelled sample) | agreement
    sample: Sample
    candidates: list[Candidate]
    host: HostInfo


@dataclass
class CandidateResult:
    key: str
    runtime: str
    precision: str
    status: str  # picked | within budget | out
    reason: str | None = None  # why it was kept out, or what it needed
    top1: float | None = None
    drop: float | None = None
    agreement: float | None = None
    cosine: float | None = None
    kl: float | None = None
    latency_ms_p50: float | None = None
    latency_ms_p90: float | None = None
    speedup: float | None = None  # over the fastest float candidate measured here
    host: HostMeasurement | None = None


@dataclass
class DeviceInfo:
    cpu: str
    arch: str
    features: list[str]
    threads: int
    runtimes: dict[str, str | None]  # name -> version, None when not installed


@dataclass
class Decision:
    version: int
    model: str
    picked: str | None
    files: list[str]  # the pick under its fixed names (model.onnx, or model.xml + model.bin)
    options: dict[str, str]  # the pick's runner settings
    rule: str
    max_drop: float | None
    metric: str
    sample_images: int
    device: DeviceInfo
    host: HostInfo
    candidates: list[CandidateResult]
    seconds: float


def to_dict(obj) -> dict[str, Any]:
    return dataclasses.asdict(obj)


def from_dict(cls, data: dict[str, Any], where: str = "manifest.json"):
    """A dataclass from its JSON dict; an unknown or missing key is a BundleError naming it."""
    if not isinstance(data, dict):
        raise BundleError(f"{where}: expected an object for {cls.__name__}", "rebuild the bundle with edgevision export")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise BundleError(f"{where}: unknown key '{unknown[0]}' in {cls.__name__}",
                          "this bundle was made by another edgevision version: rebuild it, or use that version's scripts")
    required = {f.name for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    missing = sorted(required - set(data))
    if missing:
        raise BundleError(f"{where}: {cls.__name__} lacks '{missing[0]}'", "rebuild the bundle with edgevision export")
    return cls(**{k: _convert(hints[k], v, where) for k, v in data.items()})


def _convert(hint, value, where: str):
    if value is None:
        return None
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, where)
    if origin is list and args and dataclasses.is_dataclass(args[0]):
        return [from_dict(args[0], v, where) for v in value]
    if args and origin is not list and origin is not dict and dataclasses.is_dataclass(args[0]):
        return from_dict(args[0], value, where)  # X | None
    return value


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BundleError(f"{path} not found", "give the folder written by `edgevision export --target cpu`") from None
    except ValueError as e:
        raise BundleError(f"{path} is not valid JSON ({e})", "copy the bundle again") from None


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write whole or not at all: a temporary file beside it, renamed into place."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_manifest(bundle: Path) -> BundleManifest:
    data = read_json(Path(bundle) / MANIFEST_FILE)
    if "deploy" not in data:
        raise BundleError(f"{bundle} is not a CPU deploy bundle (manifest.json has no 'deploy' section)",
                          "make one with `edgevision export RUN --target cpu`")
    manifest = from_dict(BundleManifest, data["deploy"])
    if manifest.version > MANIFEST_VERSION:
        raise BundleError(f"bundle format {manifest.version} is newer than these scripts ({MANIFEST_VERSION})",
                          "use the scripts inside the bundle")
    return manifest


def load_decision(bundle: Path) -> Decision:
    return from_dict(Decision, read_json(Path(bundle) / DECISION_FILE), DECISION_FILE)


# ---- integrity ---------------------------------------------------------------------------------------------


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def checksum_problem(bundle: Path, files: dict[str, str]) -> str | None:
    """None when every file is there with its recorded sha256, else what is wrong with the first that is not."""
    for name, expected in files.items():
        path = Path(bundle) / name
        if not path.is_file():
            return f"{name} is missing"
        if sha256(path) != expected:
            return f"{name} fails its checksum (changed after export)"
    return None


# ---- preprocessing (the host's is timm's transform; a test holds the two to each other) --------------------


def resize_crop(image, prep: Preprocessing) -> np.ndarray:
    """A PIL image -> uint8 H x W x 3, resized and centre-cropped as timm's evaluation transform does."""
    resample = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST,
                "lanczos": Image.LANCZOS}.get(prep.interpolation, Image.BILINEAR)
    _, height, width = prep.input_size
    image = image.convert("RGB")
    scale = math.floor(height / prep.crop_pct)
    if prep.crop_mode == "squash":
        image = image.resize((math.floor(width / prep.crop_pct), scale), resample)
    else:  # shorter side to `scale`, the longer one in proportion (torchvision's Resize(int))
        w, h = image.size
        short, long = min(w, h), max(w, h)
        new_long = int(scale * long / short)
        image = image.resize((scale, new_long) if w <= h else (new_long, scale), resample)
    w, h = image.size
    left, top = int(round((w - width) / 2.0)), int(round((h - height) / 2.0))
    return np.asarray(image.crop((left, top, left + width, top + height)), dtype=np.uint8)


def normalize(images: np.ndarray, prep: Preprocessing) -> np.ndarray:
    """uint8 N x H x W x 3 -> float32 N x 3 x H x W, scaled to [0, 1] and normalised."""
    x = images.astype(np.float32) / 255.0
    x = (x - np.asarray(prep.mean, np.float32)) / np.asarray(prep.std, np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def load_image(path: Path, prep: Preprocessing) -> np.ndarray:
    """One image file -> the model's 1 x 3 x H x W input."""
    try:
        with Image.open(path) as image:
            return normalize(resize_crop(image, prep)[None], prep)
    except (OSError, ValueError) as e:
        raise BundleError(f"cannot read image {path} ({e})", "give JPEG, PNG or another image Pillow reads") from None


# ---- accuracy against the float model's logits -------------------------------------------------------------


def log_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def softmax(logits: np.ndarray) -> np.ndarray:
    return np.exp(log_softmax(logits))


def fidelity(reference: np.ndarray, logits: np.ndarray, labels: np.ndarray | None) -> dict[str, float | None]:
    """Top-1 (with labels), agreement with the float model's top-1, mean logit cosine and mean KL(float || it)."""
    ref, out = reference.astype(np.float64), logits.astype(np.float64)
    cosine = (ref * out).sum(1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1) + 1e-12)
    lp, lq = log_softmax(ref), log_softmax(out)
    kl = (np.exp(lp) * (lp - lq)).sum(1)
    top1 = None if labels is None else float((out.argmax(1) == labels).mean() * 100)
    return {"top1": top1, "agreement": float((out.argmax(1) == ref.argmax(1)).mean() * 100),
            "cosine": float(cosine.mean()), "kl": float(kl.mean())}


def drop_points(measured: dict[str, float | None], reference_top1: float | None) -> float:
    """Points lost: top-1 against the float model's with labels, else agreement points."""
    if measured["top1"] is not None and reference_top1 is not None:
        return reference_top1 - measured["top1"]
    return 100.0 - measured["agreement"]


# ---- the choice (pure: recorded measurements in, a pick out) -----------------------------------------------


def choose(results: list[CandidateResult], max_drop: float | None) -> tuple[str | None, str]:
    """The fastest timed candidate within the budget, and the rule in words. Marks each result's status."""
    for r in results:
        if r.reason is None and max_drop is not None and r.drop is not None and r.drop > max_drop:
            r.reason = f"loses {r.drop:.2f} points, more than the budget ({max_drop:g})"
    holding = [r for r in results if r.reason is None and r.latency_ms_p50 is not None]
    best = min(holding, key=lambda r: r.latency_ms_p50, default=None)
    for r in results:
        r.status = "picked" if r is best else ("within budget" if r in holding else "out")
    rule = ("fastest measured on this device" if max_drop is None
            else f"fastest measured on this device within the accuracy budget ({max_drop:g} points)")
    return (best.key if best else None), rule


def add_speedups(results: list[CandidateResult]) -> None:
    """Speedup over the fastest float candidate timed here (no PyTorch on the device to compare with)."""
    floats = [r.latency_ms_p50 for r in results if r.precision == "fp32" and r.latency_ms_p50]
    if floats:
        for r in results:
            r.speedup = round(min(floats) / r.latency_ms_p50, 3) if r.latency_ms_p50 else None


# ---- the device --------------------------------------------------------------------------------------------


def cpu_flags(cpuinfo: str | None = None, arch: str | None = None) -> tuple[str, list[str]]:
    """The CPU model and its INT8-relevant features from /proc/cpuinfo (x86 'flags', ARM 'Features'). Under
    qemu-user emulation /proc/cpuinfo is the host's: flags of another architecture are not this CPU's."""
    arch = arch or platform.machine()
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            cpuinfo = ""
    model, flags, kinds = platform.processor() or arch, set(), set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "cpu model") and value.strip():
            model = value.strip()
        elif key in ("flags", "features"):
            flags.update(value.split())
            kinds.add(key)
    x86 = arch.lower() in ("x86_64", "amd64", "i686")
    if kinds and ("flags" in kinds) != x86:
        return f"{arch} CPU under emulation (/proc/cpuinfo shows the host: {model})", []
    return model, [f for f in (X86_FLAGS if x86 else ARM_FLAGS) if f in flags]


def runtime_version(name: str) -> str | None:
    try:
        module = __import__(name)
    except ImportError:
        return None
    return getattr(module, "__version__", "installed")


def device_info(threads: int) -> DeviceInfo:
    cpu, features = cpu_flags()
    return DeviceInfo(cpu, platform.machine(), features, threads,
                      {name: runtime_version(name) for name in RUNNERS})


# ---- runners: one per runtime, loaded only when a candidate needs it ----------------------------------------


class OnnxRuntimeModel:
    def __init__(self, files: list[Path], threads: int, options: dict[str, str]):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
        so.add_session_config_entry("session.force_spinning_stop", "1")  # else its threads slow the next runner
        path = next(f for f in files if f.suffix == ".onnx")
        self.session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)})[0]


class OpenVINOModel:
    """Compiled for one batch size at a time (static shapes run faster); f32 unless the candidate says bf16. A
    model traced at batch 1 whose reshapes hold that batch (ViT) cannot take another: it runs image by image."""

    def __init__(self, files: list[Path], threads: int, options: dict[str, str]):
        import openvino as ov

        self.core = ov.Core()
        precision = options.get("precision", "f32")
        if precision == "bf16" and "BF16" not in self.core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
            raise BundleError("this CPU has no native bf16 (OpenVINO lists no BF16 capability)")
        self.model = self.core.read_model(str(next(f for f in files if f.suffix == ".xml")))
        self.config = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1", "INFERENCE_PRECISION_HINT": precision,
                       "INFERENCE_NUM_THREADS": str(threads)}
        self._compiled: tuple[int, Any] | None = None
        self.traced_batch = self.model.input(0).get_partial_shape().to_shape()[0]
        self.per_image = False  # set once another batch size failed: its reshapes hold the traced batch

    def _compiled_for(self, n: int):
        if self._compiled is None or self._compiled[0] != n:
            self._compiled = None  # one executor at a time
            model = self.model.clone()
            if n != self.traced_batch:
                shape = list(model.input(0).get_partial_shape().to_shape())
                model.reshape({model.input(0): [n, *shape[1:]]})
            self._compiled = (n, self.core.compile_model(model, "CPU", self.config))
        return self._compiled[1]

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if not self.per_image:
            try:
                return np.asarray(self._compiled_for(len(batch))(batch)[0])
            except Exception:  # noqa: BLE001 - OpenVINO raises its own types when a reshape cannot hold
                if len(batch) == self.traced_batch:
                    raise
                self.per_image, self._compiled = True, None
        compiled, step = self._compiled_for(self.traced_batch), self.traced_batch
        return np.concatenate([np.asarray(compiled(batch[i:i + step])[0]) for i in range(0, len(batch), step)])


RUNNERS: dict[str, Callable[[list[Path], int, dict[str, str]], Callable[[np.ndarray], np.ndarray]]] = {
    "onnxruntime": OnnxRuntimeModel,
    "openvino": OpenVINOModel,
}


def load_runner(bundle: Path, candidate: Candidate, threads: int):
    if candidate.runtime not in RUNNERS:
        raise BundleError(f"runtime {candidate.runtime} is not one these scripts run")
    if runtime_version(candidate.runtime) is None:
        raise BundleError(f"{candidate.runtime} is not installed", f"pip install {candidate.runtime}")
    return RUNNERS[candidate.runtime]([Path(bundle) / f for f in candidate.files], threads, candidate.options)


def copy_pick(bundle: Path, candidate: Candidate) -> list[str]:
    """The picked candidate's files under their fixed names (model.onnx, or model.xml + model.bin)."""
    names = []
    for rel in candidate.files:
        name = PICK_NAMES[Path(rel).suffix]
        tmp = Path(bundle) / f".{name}.tmp"
        shutil.copyfile(Path(bundle) / rel, tmp)
        os.replace(tmp, Path(bundle) / name)
        names.append(name)
    for stale in set(PICK_NAMES.values()) - set(names):
        (Path(bundle) / stale).unlink(missing_ok=True)  # an earlier pick in the other format
    return names
