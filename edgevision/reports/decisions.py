"""A CPU deploy bundle's decision.json (what select_model.py measured on the device), read as a run's report so
that `compare` and `recommend` put the device's numbers beside the runs made here, marked with its CPU."""
from __future__ import annotations

from pathlib import Path

from edgevision.deploy import bundle_lib as lib
from edgevision.errors import EdgevisionError
from edgevision.pipeline.report import (
    BenchmarkInfo,
    DataInfo,
    ModelInfo,
    Precision,
    Role,
    RunReport,
    VariantRecord,
    split_key,
)

CPU_BUNDLE_TARGET = "cpu"  # the target whose export writes a deploy bundle (pipeline/targets/cpu_bundle.py)


def report_from_decision(path: Path) -> RunReport:
    """decision.json (and its bundle's manifest) -> the report fields compare reads. Speedups there are over the
    fastest float model timed on the device (it has no PyTorch), which the report's warning says."""
    bundle = Path(path).parent
    try:
        decision, manifest = lib.load_decision(bundle), lib.load_manifest(bundle)
    except lib.BundleError as e:
        raise EdgevisionError(str(e)) from None
    device = decision.device
    cpu = f"{device.cpu} ({device.arch}, device)"
    variants = [_variant(r, decision.metric) for r in decision.candidates if r.agreement is not None]
    return RunReport(
        model=ModelInfo(decision.model),
        data=DataInfo(f"{manifest.sample.source} (bundle sample)", decision.sample_images,
                      labelled=decision.metric == "top1"),
        variants=variants, target=CPU_BUNDLE_TARGET,
        benchmark=BenchmarkInfo(device.threads, cpu=cpu, cpu_profile={"model": cpu, "features": device.features}),
        warnings=[f"speedups measured on {cpu} are over the fastest float model timed there, not PyTorch"])


def _variant(r: lib.CandidateResult, metric: str) -> VariantRecord:
    name, runtime = split_key(r.key)
    return VariantRecord(name, runtime, Role.CANDIDATE, Precision(r.precision),
                         top1=r.top1, top1_drop=r.drop if metric == "top1" else None, agreement=r.agreement,
                         latency_ms_p50=r.latency_ms_p50, latency_ms_p90=r.latency_ms_p90, speedup=r.speedup,
                         selected=r.status == "picked")
