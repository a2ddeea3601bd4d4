"""Accuracy with labels (top-1/top-5), fidelity to the float model without (agreement, KL, cosine).

Every runtime is evaluated through the same loader and preprocessing: only the Runner differs.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgevision.data.loader import DataConfig, SkipCounter, TransformedDataset, eval_transform, make_loader
from edgevision.data.sources import ImageSource, align_classes, sample
from edgevision.errors import DataError
from edgevision.models.loading import LoadedModel
from edgevision.progress import progress_bar
from edgevision.runtimes import Runner, create_runner
from edgevision.typed import transient


@dataclass
class EvalResult:
    data: str
    images: int
    skipped: int
    top1: float | None  # percent; None without labels
    top5: float | None
    logits: np.ndarray = transient(repr=False)
    labels: np.ndarray | None = transient(repr=False)


def topk_accuracy(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
    k = min(k, logits.shape[1])
    top = np.argpartition(-logits, k - 1, axis=1)[:, :k]
    return float((top == labels[:, None]).any(axis=1).mean() * 100.0)


def evaluate(
    runner: Runner,
    source: ImageSource,
    data_config: DataConfig,
    *,
    batch_size: int = 64,
    workers: int = 0,
    progress: bool = True,
    description: str = "evaluate",
) -> EvalResult:
    return evaluate_runners({"model": runner}, source, data_config, batch_size=batch_size, workers=workers,
                            progress=progress, description=description)["model"]


def evaluate_runners(
    runners: dict[str, Runner],
    source: ImageSource,
    data_config: DataConfig,
    *,
    batch_size: int = 64,
    workers: int = 0,
    progress: bool = True,
    description: str = "evaluate",
) -> dict[str, EvalResult]:
    """Evaluate several runners in one pass: each batch is decoded and preprocessed once and the very
    same tensor goes to every runner, so float and compressed models are compared on identical input."""
    loader = make_loader(TransformedDataset(source, eval_transform(data_config)), batch_size, workers=workers)
    logits: dict[str, list[np.ndarray]] = {name: [] for name in runners}
    all_labels, counter = [], SkipCounter()
    with progress_bar(progress) as bar:
        task = bar.add_task(description, total=len(source), status="")
        for batch in loader:
            counter.add(batch)
            if len(batch.labels):
                x = batch.images.numpy()
                for name, runner in runners.items():
                    logits[name].append(runner(x))
                all_labels.append(batch.labels.numpy())
            bar.advance(task, len(batch.labels) + batch.skipped)
    counter.check(source)
    labels = np.concatenate(all_labels)
    results = {}
    for name in runners:
        out = np.concatenate(logits[name])
        top1 = top5 = None
        if source.labels is not None:
            if labels.max() >= out.shape[1]:
                raise DataError(f"{source.spec} has class index {int(labels.max())} but the model has "
                                f"{out.shape[1]} outputs", "use a model trained for these classes")
            top1, top5 = topk_accuracy(out, labels, 1), topk_accuracy(out, labels, 5)
        results[name] = EvalResult(data=source.spec, images=len(out), skipped=counter.skipped, top1=top1,
                                   top5=top5, logits=out, labels=labels if source.labels is not None else None)
    return results


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def kl_per_image(reference: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    """KL(reference || candidate) of the softmaxes, one value per image."""
    lp, lq = _log_softmax(reference.astype(np.float64)), _log_softmax(candidate.astype(np.float64))
    return (np.exp(lp) * (lp - lq)).sum(axis=1)


def fidelity(reference: np.ndarray, candidate: np.ndarray) -> dict[str, float]:
    """Label-free closeness of a candidate's logits to the reference (float) model's on the same images:
    top-1 agreement (%), mean KL(reference || candidate) of the softmaxes, mean cosine of the logits."""
    if reference.shape != candidate.shape:
        raise ValueError(f"logit shapes differ: {reference.shape} vs {candidate.shape}")
    kl = kl_per_image(reference, candidate).mean()
    num = (reference * candidate).sum(axis=1)
    den = np.linalg.norm(reference, axis=1) * np.linalg.norm(candidate, axis=1) + 1e-12
    return {
        "agreement": float((reference.argmax(1) == candidate.argmax(1)).mean() * 100.0),
        "kl": float(kl),
        "cosine": float((num / den).mean()),
    }


def evaluate_model(
    loaded: LoadedModel,
    source: ImageSource,
    *,
    runtime: str = "pytorch",
    limit: int | None = None,
    seed: int = 0,
    batch_size: int = 64,
    threads: int | None = None,
    workers: int = 0,
    progress: bool = True,
    device: str | None = None,
) -> EvalResult:
    """Top-1/top-5 of a model on a source, optionally on a seeded, class-balanced subset of `limit`.

    `device` (pytorch runtime only): where the model runs, e.g. the GPU it is training on."""
    source = sample(align_classes(source, loaded.spec.classes), limit, seed)
    placement = {"device": device} if device is not None else {}
    runner = create_runner(runtime, loaded.model, threads=threads, input_size=loaded.spec.input_size, **placement,
                           **loaded.runner_options)
    return evaluate(runner, source, loaded.spec.data_config, batch_size=batch_size, workers=workers,
                    progress=progress)
