"""`edgevision compress`: load -> [torch-level stages] -> target stages -> evaluate -> benchmark -> report.

Stages share one context and each adds what it makes: a torch-level stage (pruning, distillation) replaces
`ctx.model`; a target stage adds variants (a runner plus its artifact files). Evaluation, benchmarking and
the report are the same for every target: all variants are evaluated in one pass over the same tensors
and timed side by side. A new target is a new list in TARGET_STAGES, not a copy of this file.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgevision.backends import Runner
from edgevision.data.loader import balanced_indices, preprocess_each
from edgevision.data.sources import ImageSource, align_classes
from edgevision.errors import DataError
from edgevision.models.checkpoint import spec_meta, write_checkpoint
from edgevision.models.loading import LoadedModel


@dataclass
class Variant:
    name: str  # fp32, int8, ...
    runtime: str  # pytorch, openvino, ...
    runner: Runner
    files: list[Path] = field(default_factory=list)  # artifacts inside the run directory
    size_mb: float | None = None
    info: dict[str, Any] = field(default_factory=dict)
    timed: bool = True  # False where this machine's latency says nothing (a simulation of another device)


@dataclass
class Context:
    loaded: LoadedModel
    recipe: dict[str, Any]
    eval_source: ImageSource
    calib_source: ImageSource
    workdir: Path
    threads: int
    log: Callable[[str], None] = lambda msg: None
    progress: bool = True
    finetune_source: ImageSource | None = None  # recovery data after pruning (default: calib_source)
    variants: list[Variant] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # stage results for the report
    _calibration: list[np.ndarray] | None = None

    @property
    def model(self):
        return self.loaded.model

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        self.log(f"warning: {message}")

    def calibration(self) -> list[np.ndarray]:
        """The calibration images, preprocessed as in evaluation: batch-1 float32 arrays."""
        if self._calibration is None:
            want = self.recipe["calib_size"]
            src = self.calib_source
            idx = balanced_indices(len(src), want, src.labels, self.recipe["seed"])
            decoded, failed = preprocess_each(src, idx, self.loaded.spec.data_config)
            items = [x for _, x in decoded]
            if not items:
                raise DataError(f"no usable calibration image in {src.spec}", "give --calib-data with images")
            if len(items) < want:
                self.warn(f"asked for {want} calibration images, {src.spec} has {len(items)} usable: using all"
                          + (f" ({failed} unreadable)" if failed else ""))
            self._calibration = items
            self.extra["calibration"] = {"data": src.spec, "images": len(items), "requested": want,
                                         "seed": self.recipe["seed"], "sampling": "class-balanced"
                                         if src.labels is not None else "uniform"}
        return self._calibration


class Stage:
    name = "stage"
    int8_only = False  # skipped when the recipe says int8: false

    def run(self, ctx: Context) -> None:
        raise NotImplementedError

    def finish(self, ctx: Context, report: dict[str, Any]) -> None:
        """After evaluation and timing: write what needs the measured numbers (a bundle's README)."""


class FloatReference(Stage):
    """PyTorch eager FP32: the reference for accuracy drop, agreement and speedup."""

    name = "float reference"

    def run(self, ctx: Context) -> None:
        from edgevision.backends import create_runner

        ctx.variants.append(Variant("fp32", "pytorch", create_runner("pytorch", ctx.model, threads=ctx.threads),
                                    size_mb=_param_mb(ctx.model)))


class PruneAndRecover(Stage):
    """Structured pruning, then a short fine-tune distilled from the unpruned model; later stages export and
    quantize the pruned model, and every drop stays measured against the unpruned float reference."""

    name = "prune + recover"

    def run(self, ctx: Context) -> None:
        import copy
        import time as _time

        from edgevision.backends import create_runner
        from edgevision.compress import prune as pr
        from edgevision.models.zoo import count_gmacs

        cfg, spec = ctx.recipe["prune"], ctx.loaded.spec
        batches = None
        if cfg["importance"] == "taylor":
            import torch

            batches = [(torch.from_numpy(x), None) for x in ctx.calibration()[:32]]
        t0 = _time.perf_counter()
        result = pr.prune_model(ctx.model, spec.family, cfg["ratio"], spec.input_size, importance=cfg["importance"],
                                batches=batches)
        pruned = pr.pruned_loaded(ctx.loaded, result)
        info: dict[str, Any] = {
            "ratio": cfg["ratio"], "importance": cfg["importance"], "groups": result.groups,
            "params_before": result.params_before, "params_after": result.params_after,
            "gmacs_before": count_gmacs(ctx.model, spec.input_size), "gmacs_after": count_gmacs(result.model, spec.input_size),
            "prune_s": round(_time.perf_counter() - t0, 2), "recovery": None}
        ctx.log(f"pruned {cfg['ratio']:.0%}: {result.params_before / 1e6:.2f} M -> {result.params_after / 1e6:.2f} M "
                f"params, {info['gmacs_before']:.3f} -> {info['gmacs_after']:.3f} GMACs")
        if cfg["finetune_epochs"] > 0:
            before = copy.deepcopy(result.model).eval()
            ctx.variants.append(Variant("pruned, before recovery", "pytorch",
                                        create_runner("pytorch", before, threads=ctx.threads), timed=False))
            source = ctx.finetune_source or ctx.calib_source
            settings = pr.RecoverySettings(epochs=cfg["finetune_epochs"], images=cfg["finetune_images"],
                                           lr=cfg["finetune_lr"], temperature=cfg["temperature"], alpha=cfg["alpha"],
                                           seed=ctx.recipe["seed"])
            scratch = ctx.workdir / ".recovery.safetensors"
            ctx.log(f"recovery: {settings.epochs} epoch(s) distilled from the unpruned model on {source.spec}")
            info["recovery"] = pr.recover(pruned, ctx.model, source, scratch, settings, progress=ctx.progress,
                                          log=ctx.log)
            scratch.unlink(missing_ok=True)
        ctx.variants.append(Variant("pruned", "pytorch", create_runner("pytorch", pruned.model, threads=ctx.threads),
                                    size_mb=_param_mb(pruned.model), info={"pruning": info}))
        ctx.extra["pruning"] = info
        ctx.loaded = pruned  # the target stages export and quantize the pruned model


class OpenVINOFloat(Stage):
    name = "OpenVINO FP32"

    def run(self, ctx: Context) -> None:
        from edgevision.backends import openvino as ov_backend

        ov_model = ov_backend.convert(ctx.model, ctx.loaded.spec.input_size)
        files = ov_backend.save(ov_model, ctx.workdir / "model_fp32.xml")
        ctx.extra["ov_fp32_model"] = ov_model
        ctx.extra["input_name"] = ov_model.input(0).get_any_name()
        ctx.variants.append(Variant("fp32", "openvino", ov_backend.OpenVINORunner(ov_model, threads=ctx.threads),
                                    files=files, size_mb=_size_mb(files)))


class OpenVINOInt8(Stage):
    """NNCF post-training INT8 on the OpenVINO model; with max_drop, NNCF's accuracy control returns the
    most sensitive layers to float until the drop (top-1 with labels, else agreement) is within budget."""

    name = "OpenVINO INT8"
    int8_only = True

    def run(self, ctx: Context) -> None:
        from edgevision.backends import openvino as ov_backend

        q = ctx.recipe["quantization"]
        scope = q["ignored_scope"]
        settings = ov_backend.QuantizationSettings(
            preset=q["preset"], model_type=q["model_type"], smooth_quant_alpha=q["smooth_quant_alpha"],
            bias_correction=q["bias_correction"], ignored_names=tuple(scope["names"]),
            ignored_patterns=tuple(scope["patterns"]), ignored_types=tuple(scope["types"]))
        fp32 = ctx.extra.get("ov_fp32_model") or ov_backend.convert(ctx.model, ctx.loaded.spec.input_size)
        calibration = ctx.calibration()
        ctx.log(f"quantizing with {len(calibration)} calibration images ({q['preset']}, "
                f"model_type {q['model_type']})")
        int8 = ov_backend.quantize(fp32, calibration, settings)
        quantized = ov_backend.fake_quantized_layers(int8)
        info: dict[str, Any] = {"settings": q, "fake_quantize_ops": ov_backend.count_ops(int8).get("FakeQuantize", 0),
                                "layers_returned_to_float": []}
        if ctx.recipe["max_drop"] is not None:
            int8, info["accuracy_control"] = self._within_budget(ctx, fp32, int8, calibration, settings)
            info["layers_returned_to_float"] = sorted(set(quantized) - set(ov_backend.fake_quantized_layers(int8)))
            info["fake_quantize_ops"] = ov_backend.count_ops(int8).get("FakeQuantize", 0)
        files = ov_backend.save(int8, ctx.workdir / "model_int8.xml")
        runner = ov_backend.OpenVINORunner(int8, threads=ctx.threads)
        info["int8_layers_executed"] = runner.int8_layers()
        ctx.variants.append(Variant("int8", "openvino", runner, files=files, size_mb=_size_mb(files), info=info))

    def _within_budget(self, ctx: Context, fp32, int8, calibration, settings):
        """Measure plain INT8 on the evaluation data; if it loses more than max_drop, run accuracy control."""
        from edgevision.backends import openvino as ov_backend

        max_drop = float(ctx.recipe["max_drop"])
        src = ctx.eval_source
        labelled = src.labels is not None
        metric_name = "top1" if labelled else "agreement"
        reference = ov_backend.OpenVINORunner(fp32, threads=ctx.threads)
        # Each item carries its own target (the label, or the float model's prediction without labels):
        # NNCF calls the metric on subsets of the items, so positions cannot be relied on.
        decoded, _ = preprocess_each(src, range(len(src)), ctx.loaded.spec.data_config)
        items = [(x, int(src.labels[i]) if labelled else int(reference(x).argmax())) for i, x in decoded]

        def metric(compiled, data) -> float:
            return float(np.mean([int(np.asarray(compiled(x)[0]).argmax()) == target for x, target in data]) * 100)

        float_metric = metric(reference.compiled(1), items)
        plain = metric(ov_backend.OpenVINORunner(int8, threads=ctx.threads).compiled(1), items)
        summary = {"metric": metric_name, "max_drop": max_drop, "float": float_metric, "plain_int8": plain}
        if float_metric - plain <= max_drop:
            summary["needed"] = False
            return int8, summary
        ctx.log(f"plain INT8 loses {float_metric - plain:.2f} points of {metric_name} (budget {max_drop}): "
                "running NNCF accuracy control")
        controlled = ov_backend.quantize_with_accuracy_control(fp32, calibration, items, metric, max_drop, settings)
        summary.update(needed=True, controlled_int8=metric(
            ov_backend.OpenVINORunner(controlled, threads=ctx.threads).compiled(1), items))
        return controlled, summary


class OnnxFloat(Stage):
    name = "ONNX FP32"

    def run(self, ctx: Context) -> None:
        from edgevision.backends import onnxruntime as ort_backend

        path = ort_backend.export_onnx(ctx.model, ctx.loaded.spec.input_size, ctx.workdir / "model_fp32.onnx",
                                       dynamic_batch=True)
        ctx.extra["onnx_fp32"], ctx.extra["input_name"] = path, ort_backend.INPUT_NAME
        ctx.variants.append(Variant("fp32", "onnxruntime", ort_backend.ORTRunner(path, threads=ctx.threads),
                                    files=[path], size_mb=_size_mb([path])))


class OnnxInt8(Stage):
    """ONNX Runtime static INT8 for its CPU kernels: unsigned activations, signed per-channel weights."""

    name = "ONNX Runtime INT8"
    int8_only = True

    def run(self, ctx: Context) -> None:
        from edgevision.backends import onnxruntime as ort_backend

        qdq = ctx.recipe["qdq"]
        path = ctx.workdir / "model_int8.onnx"
        info = ort_backend.quantize_qdq(ctx.extra["onnx_fp32"], path, ctx.calibration(), ort_backend.PROFILES["cpu"],
                                        qdq["calibration_method"], qdq["exclude_nodes"])
        ctx.variants.append(Variant("int8", "onnxruntime", ort_backend.ORTRunner(path, threads=ctx.threads),
                                    files=[path], size_mb=_size_mb([path]), info=info))


class TensorRTBundle(Stage):
    """The Jetson bundle: model.onnx (symmetric INT8 Q/DQ where TensorRT fuses it, or float for
    --precision fp16/fp32), build_engine.sh, README.md. No engine is built here (TensorRT builds on the
    device); the Q/DQ model runs in ONNX Runtime instead, and that accuracy is reported as simulated."""

    name = "TensorRT bundle"

    def run(self, ctx: Context) -> None:
        import onnx

        from edgevision import __version__
        from edgevision.backends import onnxruntime as ort_backend
        from edgevision.backends import tensorrt as trt_backend

        cfg, int8, spec = ctx.recipe["tensorrt"], ctx.recipe["int8"], ctx.loaded.spec
        model_path = ctx.workdir / "model.onnx"
        # Exported with a dynamic batch axis (Swin's traced reshapes would otherwise bake in the batch),
        # then pinned to the static batch if that is what was asked.
        float_path = ctx.workdir / ".model_fp32.onnx" if int8 else model_path
        ort_backend.export_onnx(ctx.model, spec.input_size, float_path, dynamic_batch=True)
        info: dict[str, Any] = {}
        if int8:
            qdq = ctx.recipe["qdq"]
            info = ort_backend.quantize_qdq(float_path, model_path, ctx.calibration(),
                                            ort_backend.PROFILES["tensorrt"], qdq["calibration_method"],
                                            qdq["exclude_nodes"])
            float_path.unlink()
        if not cfg["dynamic_batch"]:
            ort_backend.pin_batch(model_path, cfg["batch"])
        rules = trt_backend.check_int8_rules(onnx.load(str(model_path))) if int8 else None
        opts = trt_backend.EngineOptions(
            input_name=ort_backend.INPUT_NAME, input_shape=spec.input_size, int8=int8, fp16=cfg["fp16"],
            batch=cfg["batch"], dynamic_batch=cfg["dynamic_batch"], max_batch=cfg["max_batch"],
            dla_core=cfg["dla_core"], workspace_mb=cfg["workspace_mb"])
        script = ctx.workdir / "build_engine.sh"
        script.write_text(trt_backend.build_script(opts, f"edgevision {__version__}"), encoding="utf-8")
        script.chmod(0o755)
        precision = "int8" if int8 else ("fp16" if cfg["fp16"] else "fp32")
        ctx.extra["input_name"] = ort_backend.INPUT_NAME
        ctx.extra["input_shape"] = ["batch" if cfg["dynamic_batch"] else cfg["batch"], *spec.input_size]
        ctx.extra["tensorrt"] = {
            "precision": precision, "engine_options": opts.__dict__,
            "trtexec": {"10": trt_backend.trtexec_args(opts, 10), "11": trt_backend.trtexec_args(opts, 11)},
            "rules_check": rules.to_dict() if rules else None}
        if rules is not None and not rules.passed:
            ctx.warn(f"model.onnx breaks {len(rules.violations)} TensorRT INT8 rule(s): {rules.violations[0]}")
        # "tensorrt-sim": the graph TensorRT will get, run by ONNX Runtime here; its latency here means nothing.
        runtime = "tensorrt-sim" if int8 else "onnxruntime"
        ctx.variants.append(Variant(
            "int8" if int8 else "fp32", runtime, ort_backend.ORTRunner(model_path, threads=ctx.threads),
            files=[model_path, script], size_mb=_size_mb([model_path]), timed=False,
            info={**info, "simulated": int8, "engine_precision": precision}))

    def finish(self, ctx: Context, report: dict[str, Any]) -> None:
        from edgevision.compress.bundle_readme import bundle_readme

        (ctx.workdir / "README.md").write_text(bundle_readme(report, ctx.loaded.spec), encoding="utf-8")


TARGET_STAGES: dict[str, list[type[Stage]]] = {
    "cpu": [OpenVINOFloat, OpenVINOInt8],
    "onnx": [OnnxFloat, OnnxInt8],
    "jetson": [TensorRTBundle],
}


def _size_mb(files: list[Path]) -> float:
    return sum(f.stat().st_size for f in files) / 1e6


def _param_mb(model) -> float:
    """A PyTorch model's size: its parameters' bytes."""
    return sum(p.numel() * p.element_size() for p in model.parameters()) / 1e6


@dataclass
class CompressResult:
    run_dir: Path
    report: dict[str, Any]

    @property
    def budget_met(self) -> bool:
        return self.report["status"] != "max_drop_not_met"


def build_stages(recipe: dict[str, Any]) -> list[Stage]:
    torch_level: list[Stage] = [PruneAndRecover()] if recipe["prune"]["ratio"] else []
    return [FloatReference(), *torch_level] + [cls() for cls in TARGET_STAGES[recipe["target"]]
                                                if recipe["int8"] or not cls.int8_only]


def run_pipeline(ctx: Context) -> dict[str, Any]:
    """Run the stages, evaluate and benchmark every variant, and return the report (files in ctx.workdir)."""
    from edgevision.bench import compare_latency
    from edgevision.evaluate import evaluate_runners, fidelity

    timings: dict[str, float] = {}
    stages = build_stages(ctx.recipe)
    for stage in stages:
        ctx.log(f"stage: {stage.name}")
        t0 = time.perf_counter()
        stage.run(ctx)
        timings[stage.name] = round(time.perf_counter() - t0, 2)
    runners = {_key(v): v.runner for v in ctx.variants}
    ctx.log(f"evaluating {len(runners)} variants on {ctx.eval_source.spec}")
    t0 = time.perf_counter()
    evals = evaluate_runners(runners, ctx.eval_source, ctx.loaded.spec.data_config, progress=ctx.progress)
    timings["evaluation"] = round(time.perf_counter() - t0, 2)
    timed = {_key(v): v.runner for v in ctx.variants if v.timed}
    ctx.log(f"timing {len(timed)} variants side by side ({ctx.threads} threads, batch 1)")
    t0 = time.perf_counter()
    bench = compare_latency(timed, ctx.loaded.spec.input_size, iters=ctx.recipe["benchmark_iters"])
    timings["benchmark"] = round(time.perf_counter() - t0, 2)

    ref_key = _key(ctx.variants[0])
    ref_eval, ref_bench = evals[ref_key], bench[ref_key]
    variants = []
    for v in ctx.variants:
        k = _key(v)
        fid = fidelity(ref_eval.logits, evals[k].logits)
        top1, b = evals[k].top1, bench.get(k)
        variants.append({
            "name": v.name, "runtime": v.runtime, "top1": top1,
            "top1_drop": None if top1 is None else ref_eval.top1 - top1,
            "top5": evals[k].top5, "agreement": fid["agreement"], "kl": fid["kl"], "cosine": fid["cosine"],
            "latency_ms_p50": b and b.latency_ms_p50, "latency_ms_p90": b and b.latency_ms_p90,
            "latency_ms_p99": b and b.latency_ms_p99,
            "speedup": b and ref_bench.latency_ms_p50 / b.latency_ms_p50,
            "size_mb": v.size_mb, "artifact": str(v.files[0].name) if v.files else None,
            "runner": v.runner.info(), **({"quantization": v.info} if v.info else {}),
        })
    spec = ctx.loaded.spec
    report = {
        "model": {"name": spec.name, "timm_name": spec.timm_name, "family": spec.family,
                  "input_size": list(spec.input_size), "num_classes": spec.num_classes},
        "weights": spec.weights if spec.weights != "checkpoint" else f"checkpoint:{spec.checkpoint}",
        "data": {"spec": ctx.eval_source.spec, "images": ref_eval.images, "skipped": ref_eval.skipped,
                 "labelled": ref_eval.top1 is not None},
        "calibration": ctx.extra.get("calibration"),
        "target": ctx.recipe["target"],
        "max_drop": ctx.recipe["max_drop"],
        "benchmark": {"threads": ctx.threads, "batch": 1, "iterations": ref_bench.iterations,
                      "cpu": ref_bench.cpu, "method": "side by side, interleaved rounds, medians"},
        "variants": variants,
        **({"pruning": ctx.extra["pruning"]} if "pruning" in ctx.extra else {}),
        **({"tensorrt": ctx.extra["tensorrt"]} if "tensorrt" in ctx.extra else {}),
        "warnings": ctx.warnings,
        "timings_s": timings,
        "status": "ok",
    }
    if any(not v.timed for v in ctx.variants):
        report["benchmark"]["not_timed"] = [_key(v) for v in ctx.variants if not v.timed]
    int8 = next((v for v in variants if v["name"] == "int8"), None)
    if ctx.recipe["max_drop"] is not None and int8 is not None:
        drop = int8["top1_drop"] if int8["top1_drop"] is not None else 100.0 - int8["agreement"]
        if drop > ctx.recipe["max_drop"]:
            report["status"] = "max_drop_not_met"
    rules = (ctx.extra.get("tensorrt") or {}).get("rules_check")
    if rules is not None and not rules["passed"]:
        report["status"] = "tensorrt_rules_failed"
    for stage in stages:
        stage.finish(ctx, report)
    return report


def _key(v: Variant) -> str:
    return f"{v.name}/{v.runtime}"


def compress(
    loaded: LoadedModel,
    eval_source: ImageSource,
    recipe: dict[str, Any],
    out: Path,
    *,
    calib_source: ImageSource | None = None,
    finetune_source: ImageSource | None = None,
    force: bool = False,
    progress: bool = True,
    save_model: bool = True,
    log: Callable[[str], None] = lambda msg: None,
) -> CompressResult:
    """The whole compress job into a run directory that appears only when complete.

    With `save_model`, the float PyTorch model that the artifacts were made from (the pruned one after
    pruning) goes in as model.safetensors (an edgevision checkpoint, structure as data), so that
    `edgevision export RUN_DIR` rebuilds exactly this model whatever its weights came from.
    """
    from edgevision.bench import available_cores
    from edgevision.compress.recipe import dump
    from edgevision.report import staged_directory, write_json, write_manifest

    eval_source = align_classes(eval_source, loaded.spec.classes)
    if recipe["eval_limit"] is not None and recipe["eval_limit"] < len(eval_source):
        eval_source = eval_source.subset(
            balanced_indices(len(eval_source), recipe["eval_limit"], eval_source.labels, recipe["seed"]))
    out = Path(out)
    with staged_directory(out, force=force) as workdir:
        ctx = Context(loaded=loaded, recipe=recipe, eval_source=eval_source,
                      calib_source=calib_source or eval_source, workdir=workdir,
                      threads=recipe["threads"] or available_cores(), log=log, progress=progress,
                      finetune_source=finetune_source)
        if loaded.spec.weights == "random":
            ctx.warn("weights are random: accuracy numbers are meaningless, latency is real")
        if calib_source is None and recipe["int8"]:
            ctx.warn("calibrated on the evaluation data (give --calib-data to keep them apart)")
        report = run_pipeline(ctx)
        report["run_dir"] = str(out)
        if save_model:
            write_checkpoint(workdir / "model.safetensors", ctx.loaded.model.state_dict(), spec_meta(ctx.loaded.spec))
        (workdir / "recipe.yaml").write_text(dump(recipe), encoding="utf-8")
        write_json(workdir / "report.json", report)
        write_manifest(workdir, {
            "model": ctx.loaded.spec.to_dict(),
            "input": {"name": ctx.extra.get("input_name"), "shape": ctx.extra.get("input_shape", [1, *loaded.spec.input_size]),
                      "dtype": "float32", "layout": "NCHW"},
            "preprocessing": loaded.spec.data_config,
            "classes": loaded.spec.classes,
            "data": {"evaluation": eval_source.spec, "evaluation_images": report["data"]["images"],
                     "calibration": report["calibration"]},
            "accuracy": [{k: v[k] for k in ("name", "runtime", "top1", "top1_drop", "agreement")}
                         | {"simulated": bool(v.get("quantization", {}).get("simulated"))} for v in report["variants"]],
            **({"tensorrt": report["tensorrt"]} if "tensorrt" in report else {}),
            "recipe": recipe,
        })
    return CompressResult(out, report)
