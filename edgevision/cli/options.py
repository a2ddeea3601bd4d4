"""Option types that several commands share (Typer `Annotated` aliases)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from edgevision.pipeline.targets import TARGETS

ModelArg = Annotated[Optional[str], typer.Argument(
    help="Alias (see `edgevision models`) or any timm model name; optional with an edgevision --checkpoint.",
    show_default=False)]
WeightsOpt = Annotated[Optional[str], typer.Option(
    "--weights", help="pretrained (timm's hub/cache), random (speed-only work), or fashion-mnist (a *_mini "
    "model trained by edgevision on first use and cached). Default: pretrained where timm has weights for "
    "the architecture, else random.", show_default=False)]
CheckpointOpt = Annotated[Optional[Path], typer.Option(
    "--checkpoint", help="Local weights: safetensors, a torch state dict, or an edgevision checkpoint.",
    show_default=False)]
NumClassesOpt = Annotated[Optional[int], typer.Option("--num-classes", min=1, help="Classifier outputs.",
                                                      show_default=False)]
ImgSizeOpt = Annotated[Optional[int], typer.Option("--img-size", min=8, help="Square input size in pixels.",
                                                   show_default=False)]
ModelArgOpt = Annotated[Optional[list[str]], typer.Option(
    "--model-arg", help="Extra timm constructor argument KEY=VALUE (YAML value), repeatable; "
    "e.g. --model-arg depth=6 --model-arg 'dims=[32,64,128,256]'.", show_default=False)]
ThreadsOpt = Annotated[Optional[int], typer.Option("--threads", min=1,
                                                   help="CPU threads. Default: all available cores.",
                                                   show_default=False)]
RuntimeOpt = Annotated[Optional[str], typer.Option(
    "--runtime", help="pytorch, openvino or onnxruntime (default pytorch); an artifact file (model.onnx, "
    "model_int8.xml, model.engine) runs in its own runtime.", show_default=False)]
# the training loop's options (train, distill)
WorkersOpt = Annotated[int, typer.Option("--workers", min=0, help="Data-loading processes (per training process).")]
DeviceOpt = Annotated[Optional[str], typer.Option(
    "--device", help="cpu or cuda (default: cuda if available); under torchrun each process takes its "
    "LOCAL_RANK's GPU.", show_default=False)]
ResumeOpt = Annotated[bool, typer.Option("--resume/--no-resume", help="Continue an interrupted run of the same "
                                         "command (same settings and process count).")]
SaveEveryOpt = Annotated[float, typer.Option("--save-every", min=1.0, help="Seconds between resume-state saves.")]
GradAccumOpt = Annotated[int, typer.Option("--grad-accum", min=1, help="Micro-batches per optimiser step.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout (for scripts).")]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show tracebacks instead of one-line errors.")]



# compress, prune and sweep
ImportanceOpt = Annotated[Optional[str], typer.Option("--importance", help="magnitude (default) or taylor "
                                                      "(gradients on calibration images).", show_default=False)]
FinetuneEpochsOpt = Annotated[Optional[int], typer.Option("--finetune-epochs", min=0, help="Recovery epochs, "
                                                          "distilled from the unpruned model (1; 0 = none).",
                                                          show_default=False)]
FinetuneImagesOpt = Annotated[Optional[int], typer.Option("--finetune-images", min=1, help="Recovery on a seeded, "
                                                          "class-balanced subset of this many images.",
                                                          show_default=False)]
TARGET_HELP = "; ".join(f"{t.name}: {t.description}" for t in TARGETS.values())
ForceOpt = Annotated[bool, typer.Option("--force", help="Replace --out if it exists.")]
WideOpt = Annotated[bool, typer.Option("--wide", help="Every column in the terminal table (the default fits 80 "
                                       "columns).")]
PinRuntimeOpt = Annotated[Optional[str], typer.Option(
    "--runtime", help="Pin one of the target's runtimes (cpu: openvino or onnxruntime); default: build the "
    "candidates of every runtime and select the fastest measured.", show_default=False)]
