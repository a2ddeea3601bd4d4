"""What the stages of a compress run share: the typed run context and the variants it collects.

A torch-level stage (pruning) replaces `ctx.loaded`; a target stage adds variants (a runner plus its
artifact files). Everything a later stage or the report reads is a typed field here, never an ad-hoc key.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, TypeVar

import numpy as np

from edgevision.compression.recovery import PruningRecord
from edgevision.data.loader import DataConfig, preprocess_each
from edgevision.data.sources import ImageSource, balanced_indices
from edgevision.errors import DataError
from edgevision.measure.cpu_profile import CpuProfile
from edgevision.models.loading import LoadedModel
from edgevision.pipeline.recipe import Recipe
from edgevision.pipeline.report import CalibrationInfo, Precision, Role, variant_key
from edgevision.quantization.budget import Guard, GuardClock
from edgevision.quantization.records import QuantizationRecord
from edgevision.runtimes import Runner, runtime_info
from edgevision.typed import JSONObject

if TYPE_CHECKING:
    from openvino import Model as OpenVINOModel  # openvino loads when a stage converts

    FloatGraph = Path | OpenVINOModel  # the ONNX file ONNX Runtime runs, or the OpenVINO model

S = TypeVar("S")
MORE_CALIBRATION = 4  # the accuracy guard's "more calibration images" step: this many times the run's set
MAX_GUARD_CALIBRATION = 1200  # ... at most (1200 preprocessed 224-pixel images hold 720 MB)


@dataclass
class Variant:
    name: str  # fp32, int8, pruned, ...
    runtime: str  # a name in the runtime registry
    runner: Runner
    role: Role = Role.CANDIDATE
    precision: Precision = Precision.FP32
    files: list[Path] = field(default_factory=list)  # artifacts inside the run directory
    size_mb: float | None = None
    quantization: QuantizationRecord | None = None  # what the quantizer did (settings, ops, excluded layers)
    timed: bool | None = None  # None: as the runtime says (a simulation of another device is not timed)

    @property
    def key(self) -> str:
        return variant_key(self.name, self.runtime)

    @property
    def is_timed(self) -> bool:
        return runtime_info(self.runtime).timed if self.timed is None else self.timed


@dataclass
class GraphInput:
    """The deployed graph's input, for the manifest."""

    name: str | None
    shape: list[Any]


@dataclass
class Context:
    loaded: LoadedModel
    recipe: Recipe
    eval_source: ImageSource
    calib_source: ImageSource
    workdir: Path
    threads: int
    log: Callable[[str], None] = lambda msg: None
    progress: bool = True
    finetune_source: ImageSource | None = None  # recovery data after pruning (default: calib_source)
    variants: list[Variant] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    calibration_info: CalibrationInfo | None = None
    pruning: PruningRecord | None = None  # what PruneAndRecover did
    report_sections: dict[str, JSONObject] = field(default_factory=dict)  # a target's own report.json sections
    manifest_sections: JSONObject = field(default_factory=dict)  # a target's own manifest.json sections
    graph_input: GraphInput | None = None
    cpu_profile: CpuProfile | None = None  # this machine's INT8 features and GEMM roofline
    guard: Guard = Guard(None, "off (asked)")  # the accuracy budget INT8 candidates are held to
    guard_clock: GuardClock = field(default_factory=GuardClock)  # how long the guards may take
    float_graphs: dict[str, FloatGraph] = field(default_factory=dict)  # runtime -> float graph made for it (below)
    guard_memo: dict[Any, Any] = field(default_factory=dict)  # what the accuracy guards compute once (see memo)
    _calibration: list[np.ndarray] | None = None
    _more_calibration: list[np.ndarray] | None = None  # the guard's larger set (more_calibration)

    @property
    def model(self):
        return self.loaded.model

    # what a quantization and its guard read of the run (quantization/run.QuantizationRun)
    @property
    def seed(self) -> int:
        return self.recipe.seed

    @property
    def input_size(self) -> tuple[int, int, int]:
        return self.loaded.spec.input_size

    @property
    def data_config(self) -> DataConfig:
        return self.loaded.spec.data_config

    def settings(self, kind: type[S]) -> S:
        return self.recipe.section(kind)

    def warn(self, message: str) -> None:
        """A note for the report; the CLI prints each once, under the table (not also while the run goes on)."""
        self.warnings.append(message)

    def float_graph(self, runtime: str, make: Callable[[], FloatGraph]) -> FloatGraph:
        """The float graph of the current model for `runtime`, made once: the INT8 stage quantizes the very
        graph the float stage measured, and makes it itself when no float stage ran."""
        if runtime not in self.float_graphs:
            self.float_graphs[runtime] = make()
        return self.float_graphs[runtime]

    def memo(self, key: Any, make: Callable[[], Any]) -> Any:
        """make() once per key for the target stages (the accuracy guards' decoded evaluation images and float
        metrics, shared by the candidates they guard); emptied before the evaluation pass, which streams."""
        if key not in self.guard_memo:
            self.guard_memo[key] = make()
        return self.guard_memo[key]

    def calibration(self) -> list[np.ndarray]:
        """The calibration images, preprocessed as in evaluation: batch-1 float32 arrays."""
        if self._calibration is None:
            self._calibration = self._load_calibration()
        return self._calibration

    def more_calibration(self) -> list[np.ndarray] | None:
        """A calibration set MORE_CALIBRATION times the run's (a superset: the same seed draws deeper), at most
        MAX_GUARD_CALIBRATION images, for the accuracy guard; None when calib_source has no more images."""
        have = len(self.calibration())
        want = min(have * MORE_CALIBRATION, MAX_GUARD_CALIBRATION, len(self.calib_source))
        if want <= have:
            return None
        if self._more_calibration is None:
            src = self.calib_source
            idx = balanced_indices(len(src), want, src.labels, self.recipe.seed)
            self._more_calibration = [x for _, x in preprocess_each(src, idx, self.loaded.spec.data_config)[0]]
        return self._more_calibration

    def _load_calibration(self) -> list[np.ndarray]:
        want, seed, src = self.recipe.calib_size, self.recipe.seed, self.calib_source
        idx = balanced_indices(len(src), want, src.labels, seed)
        decoded, failed = preprocess_each(src, idx, self.loaded.spec.data_config)
        items = [x for _, x in decoded]
        if not items:
            raise DataError(f"no usable calibration image in {src.spec}", "give --calib-data with images")
        if len(items) < want:
            self.warn(f"asked for {want} calibration images, {src.spec} has {len(items)} usable: using all"
                      + (f" ({failed} unreadable)" if failed else ""))
        self.calibration_info = CalibrationInfo(src.spec, len(items), want, seed,
                                                "class-balanced" if src.labels is not None else "uniform")
        return items


def size_mb(files: list[Path]) -> float:
    return sum(f.stat().st_size for f in files) / 1e6


def param_mb(model) -> float:
    """A PyTorch model's size: its parameters' bytes."""
    return sum(p.numel() * p.element_size() for p in model.parameters()) / 1e6
