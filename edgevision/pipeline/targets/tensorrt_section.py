"""The jetson target's section of report.json and manifest.json, as a type: what the bundle asks of TensorRT and
what was checked before shipping it."""
from __future__ import annotations

from dataclasses import dataclass

from edgevision.pipeline.report import RunReport
from edgevision.quantization.records import GuardSummary
from edgevision.runtimes import tensorrt as trt_backend
from edgevision.runtimes.fp16_preflight import Fp16Report
from edgevision.typed import from_data

REPORT_SECTION = trt_backend.BUNDLE_SECTION


@dataclass
class TensorRTSection:
    precision: str  # the engine's: int8, fp16, fp32
    qdq_engine: str | None  # which Q/DQ engine wrote an INT8 model.onnx
    engine_options: trt_backend.EngineOptions
    trtexec: dict[str, list[str]]  # TensorRT major version -> build_engine.sh's trtexec arguments
    rules_check: trt_backend.RulesSummary | None  # TensorRT's INT8 rules on model.onnx (INT8 only)
    fp16_preflight: Fp16Report | None  # the float graph's FP16 check (when float layers run in FP16)
    accuracy_guard: GuardSummary | None  # the Q/DQ graph's accuracy guard (INT8 with a budget)

    @classmethod
    def of(cls, report: RunReport) -> TensorRTSection | None:
        """The section a jetson run's report holds (None for other targets)."""
        found = report.sections.get(REPORT_SECTION)
        return None if found is None else from_data(cls, found, f"{REPORT_SECTION}.", strict=False, source="report")
