"""The accuracy guard of the cpu target's OpenVINO INT8 candidate.

When plain INT8 (the family preset) loses more than the budget on the evaluation data, the guard tries the
settings that measured better for some family, in order, each a variation of the preset: the transformer
scheme, the transformer scheme without SmoothQuant, full bias correction, then the best of those on a
calibration set 4 times larger (at most 1200 images, when the calibration data has them; first, with the
preset, when the run's set has fewer than 300 images); it stops at the first that holds. If none does,
NNCF's accuracy control returns the most sensitive layers of the best of them to float. Every step is
recorded with its metric, its calibration images and what it cost in time.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any, Callable

import numpy as np

from edgevision.data.loader import preprocess_each
from edgevision.data.sources import ImageSource, sample
from edgevision.quantization import openvino as nncf_ov
from edgevision.quantization.budget import GuardOutOfTime
from edgevision.quantization.openvino import NNCFSettings
from edgevision.quantization.records import GuardStep, GuardSummary
from edgevision.quantization.run import QuantizationRun
from edgevision.runtimes import create_runner

# NNCF's own default subset_size: below it, ranges from too few images are tried first (steps_after_preset).
# Measured: efficientnet_lite_mini calibrated on 4 images lost 11.5 points; 3 settings on them did not help
# (20 s), 16 images did (0.52).
SMALL_CALIBRATION = 300


def ladder(q: NNCFSettings) -> list[tuple[str, NNCFSettings]]:
    """The settings to try after the preset, in order, skipping those the preset already is."""
    transformer = replace(q, model_type="transformer")
    steps = [("transformer scheme", transformer),
             ("transformer scheme, SmoothQuant off", replace(transformer, smooth_quant_alpha=-1)),
             ("full bias correction", replace(q, bias_correction="full"))]
    seen = [q]
    out = []
    for name, settings in steps:
        if settings not in seen:
            seen.append(settings)
            out.append((name, settings))
    return out


# The guards hold the images they check on decoded in memory: at most this many bytes of them (1,783 images
# at 224x224, all 10,000 Fashion-MNIST test images at 32 px), a class-balanced sample of the evaluation data
# when it has more. The whole set decoded (50,000 images at 224 are 30 GB) would not fit; the evaluation pass
# that follows streams every image, and the selection holds the budget on its numbers.
GUARD_MEMORY_BYTES = 1 << 30


def guard_source(ctx: QuantizationRun) -> ImageSource:
    """The evaluation data the guards check on: all of it, or the sample of it that fits GUARD_MEMORY_BYTES
    (logged, so that the run says its guard saw fewer images than its evaluation)."""
    image_bytes = 4 * int(np.prod(ctx.input_size))
    src = sample(ctx.eval_source, max(GUARD_MEMORY_BYTES // image_bytes, 1), ctx.seed)
    if len(src) < len(ctx.eval_source):
        ctx.log(f"the accuracy guard checks on {len(src)} of the {len(ctx.eval_source)} evaluation images "
                f"(a class-balanced sample: {GUARD_MEMORY_BYTES >> 20} MiB decoded); the evaluation uses them all")
    return src


def validation_items(ctx: QuantizationRun, make_reference: Callable[[], Any],
                     reference_key: str) -> list[tuple[np.ndarray, int]]:
    """Each item carries its own target (the label, or the float model's prediction without labels): NNCF
    calls the metric on subsets of the items, so positions cannot be relied on. Made once per run (decoded
    images of guard_source) and per float graph (`reference_key`, when the targets are its predictions: only
    then is the reference runner made)."""
    src = ctx.memo("guard source", lambda: guard_source(ctx))
    decoded = ctx.memo("guard images",
                       lambda: preprocess_each(src, range(len(src)), ctx.data_config)[0])
    if src.labels is not None:
        return ctx.memo("labelled items", lambda: [(x, int(src.labels[i])) for i, x in decoded])

    def predicted() -> list[tuple[np.ndarray, int]]:
        images = [x for _, x in decoded]
        return [(x, int(target)) for x, target in zip(images, predictions(make_reference(), images))]

    return ctx.memo(("items", reference_key), predicted)


def metric(compiled, data) -> float:
    """NNCF's validation function: items one at a time through a compiled model."""
    return float(np.mean([int(np.asarray(compiled(x)[0]).argmax()) == target for x, target in data]) * 100)


# images per call: a pass over 10,000 32-px images in OpenVINO took 3.2 s one image per call, 0.9 s in batches
# of 32; a 224-pixel evaluation set does not fit in one call
SCORE_BATCH = 32


def logits(runner, images: list[np.ndarray]) -> np.ndarray:
    """The outputs for the images (each a batch of one), in batches of SCORE_BATCH; the last batch is padded to
    the same size, since another batch size would compile an OpenVINO model again."""
    out = []
    for start in range(0, len(images), SCORE_BATCH):
        xs = images[start:start + SCORE_BATCH]
        batch = np.concatenate(xs + [xs[-1]] * (SCORE_BATCH - len(xs)))
        out.append(np.asarray(runner(batch))[:len(xs)])
    return np.concatenate(out) if out else np.empty((0, 0), np.float32)


def predictions(runner, images: list[np.ndarray]) -> np.ndarray:
    """The top-1 class of each image, through logits()."""
    return logits(runner, images).argmax(axis=1) if images else np.empty(0, dtype=np.int64)


def score(runner, items: list[tuple[np.ndarray, int]]) -> float:
    """metric() for both guards' own checks (any runner), through predictions()."""
    predicted = predictions(runner, [x for x, _ in items])
    return float(np.mean(predicted == np.array([target for _, target in items]))) * 100


def metric_name(ctx: QuantizationRun) -> str:
    """What the guards' metric is: top-1 with labels, agreement with the float model without."""
    return "top1" if ctx.eval_source.labels is not None else "agreement"


def guard_int8(ctx: QuantizationRun, fp32, plain, calibration, q: NNCFSettings) -> tuple[Any, GuardSummary]:
    """The first INT8 model that holds ctx.guard's budget (or accuracy control's), and the path taken; `plain` was
    quantized with the settings `q`, which the ladder varies."""
    max_drop = ctx.guard.max_drop
    reference = create_runner("openvino", fp32, threads=ctx.threads)
    items = validation_items(ctx, lambda: reference, "openvino")
    float_metric = ctx.memo(("float metric", "openvino"), lambda: score(reference, items))

    def measure(model) -> float:
        return score(create_runner("openvino", model, threads=ctx.threads), items)

    plain_metric = measure(plain)
    summary = GuardSummary(metric_name(ctx), max_drop, len(items), float_metric, plain_metric,
                           needed=float_metric - plain_metric > max_drop,
                           path=[GuardStep("preset", plain_metric, len(calibration), None, settings=q)])
    if not summary.needed:
        return plain, summary
    ctx.log(f"plain INT8 loses {float_metric - plain_metric:.2f} points of {summary.metric} (budget {max_drop}): "
            "trying the next settings")
    t0 = time.perf_counter()
    tried = [Trial(plain_metric, plain, q, calibration)]
    with ctx.guard_clock.running():
        try:
            model = _ladder(ctx, fp32, items, tried, summary, measure)
        except GuardOutOfTime as stop:
            model = _stopped(ctx, summary, stop.step, _best(tried))
    summary.seconds = round(time.perf_counter() - t0, 2)
    return model, summary


def _best(tried: list["Trial"]) -> "Trial":
    return max(tried, key=lambda t: t.metric)


def _stopped(ctx: QuantizationRun, summary: GuardSummary, step: str, best: "Trial"):
    """The best tried when the guards' time ran out, recorded and said."""
    summary.stopped = ctx.guard_clock.stopped_line(step)
    _kept(summary, best.metric, best.settings, best.calibration, best.step)
    ctx.warn(f"int8/openvino: the accuracy guard {summary.stopped}")
    return best.model


def _kept(summary: GuardSummary, metric: float, settings: NNCFSettings, calibration: list, step: str | None) -> None:
    summary.final_int8, summary.settings, summary.calibration_images = metric, settings, len(calibration)
    summary.kept = step


def _ladder(ctx: QuantizationRun, fp32, items, tried: list["Trial"], summary: GuardSummary, measure):
    """The settings ladder, each step appended to `tried`, then accuracy control; the first model that holds."""
    q = tried[0].settings
    for name, settings, images in steps_after_preset(ctx, q, tried[0].calibration, lambda: _best(tried)):
        ctx.guard_clock.check(name)
        t0 = time.perf_counter()
        model = nncf_ov.quantize(fp32, images, settings)
        tried.append(Trial(measure(model), model, settings, images, name))
        summary.path.append(GuardStep(name, tried[-1].metric, len(images), round(time.perf_counter() - t0, 2),
                                      settings=settings))
        if summary.holds(tried[-1].metric):
            _kept(summary, tried[-1].metric, settings, images, None)
            return model
    ctx.guard_clock.check("NNCF accuracy control")
    model, _ = _accuracy_control(ctx, fp32, items, _best(tried), summary, measure)
    return model


@dataclass(frozen=True)
class Trial:
    metric: float
    model: Any
    settings: NNCFSettings
    calibration: list[np.ndarray]
    step: str = "preset"


def steps_after_preset(ctx: QuantizationRun, q: NNCFSettings, calibration, best: Callable[[], Trial]):
    """(step name, settings, calibration images) in order: the settings ladder on the run's calibration set,
    then the best settings so far on a larger one (when calib_source has more images). A set smaller than
    SMALL_CALIBRATION is the likelier cause, so the larger one comes first then, with the preset's settings."""
    more = ctx.more_calibration()
    small = more is not None and len(calibration) < SMALL_CALIBRATION
    if small:
        yield f"{len(more)} calibration images", q, more
    for name, settings in ladder(q):
        yield name, settings, calibration
    if more is not None and not small:
        yield f"{len(more)} calibration images", best().settings, more


def _accuracy_control(ctx: QuantizationRun, fp32, items, best: Trial, summary, measure):
    """NNCF's accuracy control from the best settings and calibration set tried: the most sensitive layers go
    back to float. When it cannot hold the budget NNCF still returns a model, which can be far worse than the
    best tried (seen: a random-weight vit_mini, 93 -> 28 points of agreement): the better of the two is kept."""
    ctx.log(f"no setting holds the budget: NNCF accuracy control from the best ({best.metric:.2f})")
    t0 = time.perf_counter()
    controlled = nncf_ov.quantize_with_accuracy_control(fp32, best.calibration, items, metric,
                                                           ctx.guard.max_drop, best.settings)
    value = measure(controlled)
    summary.path.append(GuardStep("NNCF accuracy control", value, len(best.calibration),
                                  round(time.perf_counter() - t0, 2), settings=best.settings))
    summary.controlled_int8 = value
    if value < best.metric:
        ctx.log(f"NNCF accuracy control ended below the best setting tried ({value:.2f} < {best.metric:.2f}): "
                f"keeping that ({best.step})")
        _kept(summary, best.metric, best.settings, best.calibration, best.step)
        return best.model, summary
    _kept(summary, value, best.settings, best.calibration, "NNCF accuracy control")
    return controlled, summary
