"""The CPU deploy bundle (`export --target cpu`): every candidate that can win on some CPU, a sample of the
evaluation data with the float model's logits on it, and the scripts that pick on the device itself.

The device-side code is edgevision/deploy/ (numpy, Pillow and the runtimes only), copied in as it is; this
module writes the rest: sample.npz (8-bit images already resized and cropped, so the device only normalises;
labels when the data has them; the float model's logits) and the `deploy` section of manifest.json (the typed
`BundleManifest` of deploy/bundle_lib.py).
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgevision.data.loader import DATA_CONFIG_KEYS, DataConfig
from edgevision.data.sources import balanced_indices
from edgevision.deploy import bundle_lib as lib
from edgevision.io import atomic_write_text, sha256
from edgevision.pipeline.context import Context, Role, Variant
from edgevision.pipeline.recipe import Recipe, RecipeSection
from edgevision.pipeline.report import RunReport, VariantRecord
from edgevision.pipeline.stages import Stage
from edgevision.quantization.records import NNCFRecord, QDQRecord


@dataclass
class DeploySettings:
    bundle: bool = False  # export --target cpu sets it; compress selects on the host and ships no bundle
    sample_size: int = 100  # evaluation images in sample.npz (at most SAMPLE_BYTES decoded)


DEPLOY = RecipeSection("deploy", DeploySettings)
SAMPLE_BYTES = 16_000_000  # the sample's decoded size at most: 106 images at 224x224 (about 10 MB compressed)
DEVICE_SCRIPTS = ("bundle_lib.py", "select_model.py", "predict.py")
REQUIREMENTS = """\
# The device needs Python 3.10+, numpy, Pillow and at least one of the runtimes: select_model.py skips the
# candidates of a runtime that is not installed (and says so in decision.json).
numpy>=1.24
Pillow>=9
onnxruntime>=1.17
openvino>=2025.0
"""


class CpuBundle(Stage):
    """After the cpu target's candidates are measured: the bundle's sample, scripts and manifest section."""

    name = "CPU deploy bundle"

    @classmethod
    def applies(cls, recipe: Recipe) -> bool:
        return recipe.section(DeploySettings).bundle

    def run(self, ctx: Context) -> None:
        pass  # everything it writes needs the measured report (finish)

    def finish(self, ctx: Context, report: RunReport) -> None:
        sample = write_sample(ctx, ctx.recipe.section(DeploySettings).sample_size)
        for name in DEVICE_SCRIPTS:
            shutil.copyfile(Path(lib.__file__).parent / name, ctx.workdir / name)
        atomic_write_text(ctx.workdir / "requirements.txt", REQUIREMENTS)
        atomic_write_text(ctx.workdir / "README.md", bundle_readme(report.model.name))
        manifest = bundle_manifest(ctx, report, sample)
        ctx.manifest_sections["deploy"] = lib.to_dict(manifest)
        report.sections["deploy"] = {"candidates": [c.key for c in manifest.candidates], "sample_images": sample.images}


def preprocessing(data_config: DataConfig) -> lib.Preprocessing:
    """timm's data config (the keys every spec and manifest records) as the device's preprocessing type."""
    return lib.Preprocessing(**{k: (list(data_config[k]) if isinstance(data_config[k], tuple) else data_config[k])
                                for k in DATA_CONFIG_KEYS if data_config.get(k) is not None})


def write_sample(ctx: Context, size: int) -> lib.Sample:
    """A class-balanced sample of the evaluation data, preprocessed by the device's own code up to
    normalisation, with the float PyTorch model's logits on exactly those inputs."""
    import torch

    prep = preprocessing(ctx.loaded.spec.data_config)
    source = ctx.eval_source
    _, height, width = prep.input_size
    size = max(1, min(size, len(source), SAMPLE_BYTES // (height * width * 3)))
    indices = balanced_indices(len(source), size, source.labels, ctx.recipe.seed)
    images = np.stack([lib.resize_crop(source.load(int(i)), prep) for i in indices])
    with torch.no_grad():
        inputs = torch.from_numpy(lib.normalize(images, prep))
        logits = np.concatenate([ctx.model.eval()(inputs[s:s + 32]).numpy() for s in range(0, len(inputs), 32)])
    arrays = {"images": images, "logits": logits.astype(np.float32)}
    if source.labels is not None:
        arrays["labels"] = source.labels[indices].astype(np.int64)
    path = ctx.workdir / lib.SAMPLE_FILE
    np.savez_compressed(path, **arrays)
    return lib.Sample(lib.SAMPLE_FILE, sha256(path), len(images), source.labels is not None, source.spec)


def _files(v: Variant, workdir: Path) -> dict[str, str]:
    return {str(f.relative_to(workdir)): sha256(f) for f in v.files}


def _host_row(row: VariantRecord) -> lib.HostMeasurement:
    return lib.HostMeasurement(row.top1, row.drop, row.agreement, row.latency_ms_p50, row.speedup, row.selected)


def bundle_manifest(ctx: Context, report: RunReport, sample: lib.Sample) -> lib.BundleManifest:
    candidates = []
    for v in ctx.variants:
        if v.role is not Role.CANDIDATE or not v.files:
            continue
        q = v.quantization
        precision = q.inference_precision if isinstance(q, NNCFRecord) else None
        options = {"precision": precision} if precision else {}
        candidates.append(lib.Candidate(v.key, v.runtime, v.precision.value, _files(v, ctx.workdir), options,
                                        q.format if isinstance(q, QDQRecord) else None, _host_row(report.variant(v.key))))
    profile = report.benchmark.cpu_profile or {}
    host = lib.HostInfo(report.benchmark.cpu, profile.get("features", []), profile.get("tier"), ctx.threads,
                        report.selection.selected)
    return lib.BundleManifest(lib.MANIFEST_VERSION, report.model.name,
                              preprocessing(ctx.loaded.spec.data_config), ctx.loaded.spec.classes, ctx.guard.max_drop,
                              "top1" if sample.labelled else "agreement", sample, candidates, host)


def bundle_readme(model: str) -> str:
    return f"""# {model}: CPU deploy bundle

Every candidate that can be the fastest on some CPU, with a sample of the evaluation data and the float
model's outputs on it. On the machine that will run the model (Python 3.10+; no torch, no edgevision):

```bash
pip install -r requirements.txt      # or only the runtime(s) you have: the others' candidates are skipped
python select_model.py               # checks, times and picks here: decision.json, model.onnx or model.xml
python predict.py photo.jpg          # top-5 classes with the picked model
```

`select_model.py` checks each file's sha256, runs each candidate on the sample against the float model's
logits, times those within the accuracy budget side by side, and keeps the fastest. It exits 3 when no
candidate holds the budget here (`--max-drop P` changes the budget, `--threads N` the threads).
`manifest.json` (section `deploy`) lists the candidates and what the building machine measured.
"""
