"""The run report as types: what `compress`, `prune` and `export` write to report.json and what every reader
(`compare`, `recommend`, `export`, the status, the CLI) loads back.

report.json is `RunReport.to_dict()`; `RunReport.from_dict` reads it, and reads reports written before the types
existed (no `schema_version`, `key` or `precision`; older ones without `role` or `target`). A target's own section
(`tensorrt`, `deploy`) is a top-level key that the target alone reads (`RunReport.sections`). The JSON Schema in
docs/report.schema.json is `report_schema()`; the test suite validates every report it writes against it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from enum import Enum
from pathlib import Path
from typing import Any

from edgevision.compression.recovery import PruningRecord
from edgevision.errors import EdgevisionError
from edgevision.quantization.budget import Guard
from edgevision.runtimes import RunnerInfo
from edgevision.typed import ContractError, from_data, json_schema, to_data

SCHEMA_VERSION = 2  # 1: the untyped reports (no schema_version)


class Role(str, Enum):
    """What a variant is in the comparison."""

    REFERENCE = "reference"  # PyTorch FP32 of the model as given: every drop and speedup is against it
    PRUNED_BEFORE_RECOVERY = "pruned-before-recovery"  # a step, not a deployable model
    PRUNED = "pruned"  # the pruned PyTorch model that the target stages export
    CANDIDATE = "candidate"  # an artifact of the target: what would be deployed


class Precision(str, Enum):
    """The precision of a variant's heavy layers (its float layers may run in FP16 or BF16)."""

    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"


def variant_key(name: str, runtime: str) -> str:
    """A variant's identity in a run: "int8/openvino"."""
    return f"{name}/{runtime}"


def split_key(key: str) -> tuple[str, str]:
    name, _, runtime = key.partition("/")
    return name, runtime


@dataclass
class VariantRecord:
    """One variant of a run, measured: accuracy against the labels and the reference, latency, size."""

    name: str  # fp32, int8, int8-u8s8, pruned, ...
    runtime: str  # a name in the runtime registry
    role: Role = Role.CANDIDATE
    precision: Precision = Precision.FP32
    top1: float | None = None
    top1_drop: float | None = None  # against the reference, points
    top5: float | None = None
    agreement: float | None = None  # % of images with the reference's top-1 answer
    kl: float | None = None
    cosine: float | None = None
    latency_ms_p50: float | None = None  # None: not timed here
    latency_ms_p90: float | None = None
    latency_ms_p99: float | None = None
    speedup: float | None = None  # the reference's p50 over this one's
    size_mb: float | None = None
    artifact: str | None = None  # its file in the run directory
    runner: RunnerInfo | None = None  # how it ran (runtime, version, threads, device, ...)
    quantization: dict[str, Any] | None = None  # what the quantizer did (settings, ops, excluded layers, guard)
    selected: bool = False
    key: str = ""  # name/runtime, filled in from them

    def __post_init__(self) -> None:
        self.key = variant_key(self.name, self.runtime)

    @property
    def is_candidate(self) -> bool:
        return self.role is Role.CANDIDATE

    @property
    def is_int8(self) -> bool:
        return self.precision is Precision.INT8

    @property
    def timed(self) -> bool:
        return self.latency_ms_p50 is not None

    @property
    def drop(self) -> float:
        """Points lost: top-1 with labels, else agreement with the float model."""
        return self.top1_drop if self.top1_drop is not None else 100.0 - self.agreement

    @property
    def simulated(self) -> bool:
        return bool((self.quantization or {}).get("simulated"))

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "report") -> VariantRecord:
        """A variant row of report.json, of this version or an older one."""
        return from_data(cls, _upgrade_variant(data), strict=False, source=source)


@dataclass
class SelectionCandidate:
    key: str
    latency_ms_p50: float
    drop: float
    within_budget: bool


@dataclass
class Selection:
    """Which variant to deploy and by what rule."""

    selected: str | None  # the key of the selected variant, None when nothing holds the budget
    rule: str  # how it was chosen, in words
    max_drop: float | None
    candidates: list[SelectionCandidate] = field(default_factory=list)


@dataclass
class ModelInfo:
    name: str
    timm_name: str | None = None
    family: str | None = None
    input_size: list[int] | None = None
    num_classes: int | None = None


@dataclass
class DataInfo:
    spec: str
    images: int
    skipped: int = 0
    labelled: bool = True


@dataclass
class CalibrationInfo:
    data: str
    images: int
    requested: int
    seed: int
    sampling: str  # class-balanced | uniform


@dataclass
class BenchmarkInfo:
    threads: int | None = None
    batch: int = 1
    iterations: int | None = None
    cpu: str | None = None
    method: str | None = None
    cpu_profile: dict[str, Any] | None = None  # measure/cpu_profile.CpuProfile.to_dict()
    not_timed: list[str] | None = None  # keys of the variants not timed here


@dataclass
class RunReport:
    """report.json of a compress, prune or export run."""

    model: ModelInfo
    data: DataInfo
    variants: list[VariantRecord]
    target: str = "cpu"
    weights: str | None = None
    calibration: CalibrationInfo | None = None
    max_drop: float | None = None  # the budget in force (None: no guard); `guard` says why
    guard: Guard | None = None
    benchmark: BenchmarkInfo = field(default_factory=BenchmarkInfo)
    pruning: PruningRecord | None = None  # what pruning and its recovery did
    selection: Selection | None = None
    status: str = "ok"
    warnings: list[str] = field(default_factory=list)
    timings_s: dict[str, float] = field(default_factory=dict)
    run_dir: str | None = None
    schema_version: int = SCHEMA_VERSION
    # a target's own sections ("tensorrt", "deploy"), top-level keys in report.json, read by that target alone
    sections: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def selected(self) -> VariantRecord | None:
        """The variant to deploy: the fastest measured within the accuracy budget."""
        return next((v for v in self.variants if v.selected), None)

    @property
    def reference(self) -> VariantRecord | None:
        return next((v for v in self.variants if v.role is Role.REFERENCE), None)

    def candidates(self) -> list[VariantRecord]:
        return [v for v in self.variants if v.is_candidate]

    def variant(self, key: str) -> VariantRecord:
        return next(v for v in self.variants if v.key == key)

    def to_dict(self) -> dict[str, Any]:
        data = to_data(self)
        sections = data.pop("sections")
        if data["pruning"] is None:  # as before the types: present only when the run pruned
            del data["pruning"]
        for row, variant in zip(data["variants"], self.variants):
            row["runner"] = to_data(variant.runner) if variant.runner else {}
            if row["quantization"] is None:
                del row["quantization"]
        return {**data, **sections}

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "report") -> RunReport:
        """report.json, this version's or an older one's."""
        if not isinstance(data, dict) or "model" not in data or "variants" not in data:
            raise EdgevisionError(f"{source} is not an edgevision run report (no model or variants)",
                                  "give a run directory made by compress, prune or export")
        known = {k: v for k, v in data.items() if k in _FIELDS}
        known["variants"] = [_upgrade_variant(v) for v in data["variants"]]
        known.setdefault("schema_version", 1)
        known["sections"] = {k: v for k, v in data.items() if k not in _FIELDS}
        try:
            return from_data(cls, known, strict=False, source=source)
        except ContractError as e:
            raise EdgevisionError(str(e), "rerun the command that wrote it") from None

    @classmethod
    def load(cls, path: str | Path) -> RunReport:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise EdgevisionError(f"{path} is not readable JSON", "rerun the command that wrote it") from None
        return cls.from_dict(data, str(path))


# report.json's own top-level keys; any other is a target's section
_FIELDS = {f.name for f in fields(RunReport)} - {"sections"}
_LEGACY_ROLES = {("fp32", "pytorch"): Role.REFERENCE, ("pruned", "pytorch"): Role.PRUNED,
                 ("pruned, before recovery", "pytorch"): Role.PRUNED_BEFORE_RECOVERY}


def _upgrade_variant(row: dict[str, Any]) -> dict[str, Any]:
    """A variant row of any version: reports before schema 2 had no precision (it was the name's prefix) and
    the oldest no role (it was the name)."""
    row = {k: v for k, v in row.items() if k != "key"}
    if "role" not in row:
        row["role"] = _LEGACY_ROLES.get((row.get("name"), row.get("runtime")), Role.CANDIDATE).value
    if "precision" not in row:
        name = str(row.get("name", ""))
        row["precision"] = next((p.value for p in (Precision.INT8, Precision.FP16) if name.startswith(p.value)),
                                Precision.FP32.value)
    return row


def report_schema() -> dict[str, Any]:
    """The JSON Schema of report.json (target sections are further top-level objects)."""
    schema = json_schema(RunReport, "edgevision run report (report.json)", extra_properties=True)
    schema["properties"].pop("sections")
    return schema
