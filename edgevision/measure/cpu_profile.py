"""What this CPU can do for INT8: its instruction-set features and a measured micro-roofline per runtime.

INT8 speed depends on the instruction set more than on anything else: VNNI (AVX-512 VNNI, AVX-VNNI) and
AMX multiply INT8 in one instruction, AVX2 needs three, ARM has dot-product (asimddp) and i8mm. So the
profile measures one GEMM (784 x 768 x 3072, a ViT-B MLP at 224 with batch 4) in FP32 and in INT8 in
OpenVINO and in ONNX Runtime (both INT8 activation formats: u8 x s8 and s8 x s8), side by side, and says
in plain words what follows. A micro-benchmark ranks formats; only timing the model itself decides, which
compress does. The profile takes a few seconds and is cached per machine, thread count and runtime versions.
"""
from __future__ import annotations

import hashlib
import json
import platform
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

import archspec.cpu
import archspec.cpu.detect
import numpy as np

from edgevision.io import cache_dir, write_json
from edgevision.measure.bench import available_cores, cpu_name
from edgevision.runtimes import create_runner

GEMM_SHAPE = (784, 768, 3072)  # M, K, N
# INT8-relevant features, as /proc/cpuinfo (and archspec) names them, and the x86 bf16 ones that an INT8
# model's float layers can use in OpenVINO
INT8_FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm")
BF16_FEATURES = ("avx512_bf16", "amx_bf16")
INT8_PAYS = 1.15  # INT8 GEMM at least this much faster than FP32 counts as paying
PROFILE_VERSION = 3  # 2: bf16 features recorded; 3: ONNX Runtime stops spinning after a run (was 2-3x low)


def int8_features(flags: Iterable[str]) -> list[str]:
    """The INT8-relevant (and x86 bf16) features among a CPU's flags, in a fixed order."""
    present = set(flags)
    return [f for f in (*INT8_FEATURES, *BF16_FEATURES) if f in present]


def int8_tier(features: Iterable[str]) -> str:
    """amx, vnni, dotprod (ARM), avx2 or none: what INT8 matrix multiplies run on."""
    present = set(features)
    if "amx_int8" in present:
        return "amx"
    if present & {"avx512_vnni", "avx_vnni"}:
        return "vnni"
    if present & {"asimddp", "i8mm"}:
        return "dotprod"
    return "avx2" if "avx2" in present else "none"


@dataclass
class CpuProfile:
    cpu: str
    arch: str
    threads: int
    features: list[str]  # int8_features of the host
    versions: dict[str, str]
    gemm_gops: dict[str, float] = field(default_factory=dict)  # "runtime precision" -> GOP/s, medians
    seconds: float = 0.0
    measured: str = ""

    @property
    def tier(self) -> str:
        return int8_tier(self.features)

    def int8_gops(self, runtime: str) -> float | None:
        """The INT8 GEMM roofline of `runtime`: its best INT8 format's GOP/s, or None when not measured."""
        return max((v for k, v in self.gemm_gops.items() if k.startswith(f"{runtime} int8")), default=None)

    def int8_speedup(self, runtime: str) -> float | None:
        """INT8 over FP32 GEMM throughput in `runtime` (its best INT8 format), or None when not measured."""
        fp32, int8 = self.gemm_gops.get(f"{runtime} fp32"), self.int8_gops(runtime)
        return round(int8 / fp32, 2) if fp32 and int8 else None

    def onnxruntime_formats(self) -> list[str]:
        """ONNX Runtime INT8 activation formats worth building here: u8 x s8 always (ONNX Runtime's CPU default,
        fused for every operator); on ARM s8 x s8 too when its GEMM is not clearly slower. On x86 s8 x s8 is not
        built whatever its GEMM measures: ONNX Runtime runs the operators around the GEMMs on slower s8 paths, and
        every 224 px model timed slower whole than in u8 x s8 (AVX2 Zen 3: 0.58-1.48x PyTorch against 1.35-1.74x,
        though its GEMM measured 228-323 GOP/s against 212-229; AVX-512 VNNI: 0.87-3.95x against 1.70-4.82x).
        A deploy bundle still carries every format."""
        u8, s8 = self.gemm_gops.get("onnxruntime int8 u8s8"), self.gemm_gops.get("onnxruntime int8 s8s8")
        signed = not self.is_x86 and u8 and s8 and s8 * INT8_PAYS >= u8
        formats = ["u8s8", "s8s8"] if signed else ["u8s8"]
        return [*formats[:1], "u8s8-rr", *formats[1:]] if self.saturates_u8s8 else formats

    @property
    def is_x86(self) -> bool:
        return self.arch in ("x86_64", "AMD64")

    @property
    def saturates_u8s8(self) -> bool:
        """x86 without VNNI or AMX sums pairs of u8 x s8 products in 16 bits (vpmaddubsw), which saturate: there
        u8 x s8 with 7-bit weights (u8s8-rr) is built too, and can keep answers that full-range weights lose."""
        return self.is_x86 and self.tier in ("avx2", "none")

    def int8_conclusion(self, runtime: str) -> str | None:
        """Whether INT8 pays in `runtime` on this CPU, and the instruction-set reason, or None if not measured."""
        reason = {"avx2": "AVX2 only, no VNNI or AMX", "none": "no AVX2, VNNI or AMX",
                  "dotprod": "ARM dot-product instructions", "vnni": "VNNI", "amx": "AMX"}[self.tier]
        name = {"openvino": "OpenVINO", "onnxruntime": "ONNX Runtime"}.get(runtime, runtime)
        gain = self.int8_speedup(runtime)
        if gain is None:
            return None
        if gain < INT8_PAYS:
            return f"INT8 in {name} is no faster than FP32 on this CPU ({gain:.2f}x on a GEMM): {reason}"
        return f"INT8 in {name} runs {gain:.2f}x FP32 on a GEMM on this CPU ({reason})"

    def conclusions(self) -> list[str]:
        """What follows, in plain words."""
        lines = [line for line in map(self.int8_conclusion, ("openvino", "onnxruntime")) if line]
        formats = self.onnxruntime_formats()
        lines.append(f"ONNX Runtime INT8 formats to build and time: {' and '.join(formats)} (activations x weights)")
        bf16 = [f for f in BF16_FEATURES if f in self.features]
        if bf16:
            lines.append(f"bf16 in hardware ({', '.join(bf16)}): OpenVINO INT8 with its float layers in bf16 is "
                         "timed as a candidate too")
        return lines

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "tier": self.tier, "conclusions": self.conclusions()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CpuProfile":
        """A profile from its cache file or from to_dict() (as a report records it): derived keys are dropped."""
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


def host_flags() -> set[str]:
    """The host CPU's own feature flags, through archspec (which reads /proc/cpuinfo or sysctl).

    Not `archspec.cpu.host().features`: those are the flags of the closest *named* microarchitecture, which
    drops what that name lacks (a KVM Xeon with AMX and AVX-VNNI is reported as an icelake, without either)."""
    detected = getattr(archspec.cpu.detect, "detected_info", None)  # archspec >= 0.2.7
    return set((detected() if detected else archspec.cpu.host()).features)


def runtime_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("openvino", "onnxruntime"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def _cache_path(cpu: str, features: list[str], threads: int, versions: dict[str, str]) -> Path:
    key = json.dumps({"cpu": cpu, "features": features, "threads": threads, "versions": versions,
                      "gemm": GEMM_SHAPE, "version": PROFILE_VERSION}, sort_keys=True)
    return cache_dir() / "cpu-profile" / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"


def cpu_profile(threads: int | None = None, *, refresh: bool = False, measure: bool = True) -> CpuProfile:
    """This machine's profile: cached per CPU, features, thread count and runtime versions; `refresh`
    measures again; `measure=False` gives the features alone when nothing is cached."""
    threads = threads or available_cores()
    features, versions = int8_features(host_flags()), runtime_versions()
    path = _cache_path(cpu_name(), features, threads, versions)
    if path.is_file() and not refresh:
        return CpuProfile.from_dict(json.loads(path.read_text(encoding="utf-8")))
    profile = CpuProfile(cpu_name(), platform.machine(), threads, features, versions)
    if not measure:
        return profile
    t0 = time.perf_counter()
    profile.gemm_gops = measure_gemms(threads)
    profile.seconds = round(time.perf_counter() - t0, 1)
    profile.measured = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, asdict(profile))
    return profile


def gemm_models(folder: Path) -> dict[str, Path]:
    """The GEMM as ONNX: FP32, and Q/DQ INT8 with u8 or s8 activations (s8 per-channel weights)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    m, k, n = GEMM_SHAPE
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((k, n)).astype(np.float32)
    scale = np.abs(weight).max(axis=0) / 127.0
    q_weight = np.clip(np.round(weight / scale), -127, 127).astype(np.int8)
    paths = {}
    for name, act in (("fp32", None), ("int8 u8s8", TensorProto.UINT8), ("int8 s8s8", TensorProto.INT8)):
        inits = [numpy_helper.from_array(weight, "w")]
        nodes = [helper.make_node("MatMul", ["x", "w"], ["y"])]
        if act is not None:
            zp = np.array(128 if act == TensorProto.UINT8 else 0, np.uint8 if act == TensorProto.UINT8 else np.int8)
            inits = [numpy_helper.from_array(q_weight, "wq"), numpy_helper.from_array(scale, "ws"),
                     numpy_helper.from_array(np.zeros(n, np.int8), "wz"),
                     numpy_helper.from_array(np.array(0.02, np.float32), "xs"), numpy_helper.from_array(zp, "xz")]
            nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
                     helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
                     helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wd"], axis=1),
                     helper.make_node("MatMul", ["xd", "wd"], ["y"])]
        graph = helper.make_graph(nodes, "gemm", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [m, k])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [m, n])], inits)
        path = folder / f"gemm-{name.replace(' ', '-')}.onnx"
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
        paths[name] = path
    return paths


def measure_gemms(threads: int, iters: int = 12) -> dict[str, float]:
    """GOP/s (2 M K N / median call time) of each runtime and precision, timed side by side."""
    m, k, n = GEMM_SHAPE
    with tempfile.TemporaryDirectory(prefix="edgevision-gemm-") as tmp:
        models = gemm_models(Path(tmp))
        runners = {f"onnxruntime {name}": create_runner("onnxruntime", path, threads=threads)
                   for name, path in models.items()}
        for name in ("fp32", "int8 u8s8"):  # OpenVINO picks its own INT8 format from the Q/DQ
            runners[f"openvino {name.split()[0]}"] = create_runner("openvino", models[name], threads=threads)
        x = np.random.default_rng(1).standard_normal((m, k)).astype(np.float32)
        times = {name: [] for name in runners}
        for runner in runners.values():
            runner(x)
        for _ in range(iters):  # interleaved: drift on a shared machine hits every runner alike
            for name, runner in runners.items():
                t0 = time.perf_counter()
                runner(x)
                times[name].append(time.perf_counter() - t0)
    return {name: round(2 * m * k * n / float(np.median(t)) / 1e9, 1) for name, t in times.items()}
