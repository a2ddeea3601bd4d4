"""`edgevision distill`."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from edgevision import api
from edgevision.cli.common import cli_errors, console, parse_model_args, print_json, rank_zero_log
from edgevision.cli.options import (
    DebugOpt,
    DeviceOpt,
    GradAccumOpt,
    JsonOpt,
    ResumeOpt,
    SaveEveryOpt,
    ThreadsOpt,
    WorkersOpt,
)
from edgevision.compression.distill import DistillConfig, DistillReport
from edgevision.reports.render import fmt
from edgevision.typed import to_data

_D = DistillConfig()


TeacherOpt = Annotated[Optional[str], typer.Option(
        "--teacher", help="Teacher: alias or timm name (e.g. vit_l); optional with an edgevision "
        "--teacher-checkpoint.", show_default=False)]
StudentOpt = Annotated[Optional[str], typer.Option(
        "--student", help="Student: alias or timm name (vit_s, convnext_t, hybrid_t, ...); optional with an "
        "edgevision --student-checkpoint.", show_default=False)]
DataOpt = Annotated[str, typer.Option("--data", help="Training data: ImageFolder, labels CSV or builtin:NAME "
                                      "(builtin splits default to train). Unlabelled data works with --alpha 1.")]
OutOpt = Annotated[Optional[Path], typer.Option(
        "--out", help="Run directory: student.pt, report.json (default runs/distill-TEACHER-to-STUDENT; rerunning "
        "the same command resumes an interrupted run).", show_default=False)]
AlphaOpt = Annotated[float, typer.Option("--alpha", min=0.0, max=1.0, help="Weight of the teacher's soft targets; "
                                         "1 - alpha weighs the labels.")]
TemperatureOpt = Annotated[float, typer.Option("--temperature", min=0.01, help="Softmax temperature T (the KL term "
                                               "is scaled by T^2).")]
FeatureWeightOpt = Annotated[float, typer.Option(
        "--feature-weight", min=0.0, help="Add feature distillation (pooled features through a learned projection "
        "where widths differ) with this weight; 0 = off.")]
EvalDataOpt = Annotated[Optional[str], typer.Option(
        "--eval-data", help="Report teacher and student top-1 on this data (default: --data's test split for "
        "builtin data).", show_default=False)]
EvalLimitOpt = Annotated[Optional[int], typer.Option("--eval-limit", min=1, help="Evaluate a class-balanced "
                                                      "subset of this many images.", show_default=False)]
LimitOpt = Annotated[Optional[int], typer.Option("--limit", min=1, help="Train on a seeded, class-balanced subset "
                                                 "of this many images.", show_default=False)]
BatchSizeOpt = Annotated[int, typer.Option("--batch-size", min=1, help="Per process.")]
LrOpt = Annotated[float, typer.Option("--lr", min=0.0, help="Peak AdamW learning rate.")]
AugmentOpt = Annotated[str, typer.Option("--augment", help="light (random resized crop, flip) or none.")]
ViewsOpt = Annotated[int, typer.Option("--views", min=1, help="Augmentation views per image whose teacher outputs "
                                       "are cached (epoch e uses view e mod VIEWS); 1 with --augment none.")]
TeacherCacheOpt = Annotated[Optional[Path], typer.Option(
        "--teacher-cache", help="Folder for cached teacher outputs (default: under $EDGEVISION_CACHE, "
        "~/.cache/edgevision).", show_default=False)]
NoTeacherCacheOpt = Annotated[bool, typer.Option("--no-teacher-cache",
                                                   help="Run the teacher on every batch.")]
LatencyRuntimeOpt = Annotated[str, typer.Option(
        "--latency-runtime", help="Where teacher and student latency is measured: openvino, pytorch, onnxruntime, "
        "or none.")]
TeacherWeightsOpt = Annotated[Optional[str], typer.Option("--teacher-weights", help="pretrained, random or "
                                                           "fashion-mnist (see --weights).", show_default=False)]
TeacherCheckpointOpt = Annotated[Optional[Path], typer.Option("--teacher-checkpoint", show_default=False)]
StudentWeightsOpt = Annotated[Optional[str], typer.Option("--student-weights", help="Initial student weights "
                                                           "(default: pretrained where timm has them, else random).",
                                                           show_default=False)]
StudentCheckpointOpt = Annotated[Optional[Path], typer.Option("--student-checkpoint", show_default=False)]
StudentArgOpt = Annotated[Optional[list[str]], typer.Option(
        "--student-arg", help="Extra timm constructor argument for the student, KEY=VALUE, repeatable.",
        show_default=False)]
StudentImgSizeOpt = Annotated[Optional[int], typer.Option("--student-img-size", min=8, show_default=False)]
NumClassesOpt = Annotated[Optional[int], typer.Option(
        "--num-classes", min=1, help="Classifier outputs of both models when they are built (default: the "
        "teacher's).", show_default=False)]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed of the data order, the augmentation and a random "
                                      "model's initial weights.")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Overwrite a finished run in --out.")]


def distill_command(
    teacher: TeacherOpt = None,
    student: StudentOpt = None,
    data: DataOpt = ...,
    out: OutOpt = None,
    epochs: Annotated[int, typer.Option("--epochs", min=1)] = _D.epochs,
    alpha: AlphaOpt = _D.alpha,
    temperature: TemperatureOpt = _D.temperature,
    feature_weight: FeatureWeightOpt = _D.feature_weight,
    eval_data: EvalDataOpt = None,
    eval_limit: EvalLimitOpt = None,
    limit: LimitOpt = None,
    batch_size: BatchSizeOpt = _D.batch_size,
    grad_accum: GradAccumOpt = 1,
    lr: LrOpt = _D.lr,
    weight_decay: Annotated[float, typer.Option("--weight-decay", min=0.0)] = _D.weight_decay,
    augment: AugmentOpt = _D.augment,
    views: ViewsOpt = _D.views,
    teacher_cache: TeacherCacheOpt = None,
    no_teacher_cache: NoTeacherCacheOpt = False,
    latency_runtime: LatencyRuntimeOpt = "openvino",
    teacher_weights: TeacherWeightsOpt = None,
    teacher_checkpoint: TeacherCheckpointOpt = None,
    student_weights: StudentWeightsOpt = None,
    student_checkpoint: StudentCheckpointOpt = None,
    student_arg: StudentArgOpt = None,
    student_img_size: StudentImgSizeOpt = None,
    num_classes: NumClassesOpt = None,
    seed: SeedOpt = _D.seed,
    workers: WorkersOpt = _D.workers,
    threads: ThreadsOpt = None,
    device: DeviceOpt = None,
    resume: ResumeOpt = True,
    save_every: SaveEveryOpt = 60.0,
    force: ForceOpt = False,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Distill a teacher (e.g. ViT-L) into a smaller student; runs as is or under `torchrun --nproc_per_node N`.

    Writes OUT/student.pt (use it with compress/export/evaluate --checkpoint) and OUT/report.json: teacher
    and student top-1 on the same data, and their latency side by side.
    """
    main, log = rank_zero_log()
    with cli_errors(debug):
        cfg = DistillConfig(epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, seed=seed,
                            workers=workers, augment=augment, grad_accum=grad_accum, alpha=alpha,
                            temperature=temperature, feature_weight=feature_weight, views=views)
        result = api.distill_models(
            teacher, student, data, out, cfg, limit=limit, eval_data=eval_data, eval_limit=eval_limit, threads=threads,
            teacher_options={"weights": teacher_weights, "checkpoint": teacher_checkpoint, "num_classes": num_classes},
            student_options={"weights": student_weights, "checkpoint": student_checkpoint, "num_classes": num_classes,
                             "img_size": student_img_size, "model_kwargs": parse_model_args(student_arg) or None},
            teacher_cache=False if no_teacher_cache else (teacher_cache or True), latency_runtime=latency_runtime,
            resume=resume, force=force, device=device, progress=not json_out and main, save_every_s=save_every,
            log=log)
        if not main:
            return
        if json_out:
            print_json({"out": result.out, "checkpoint": result.checkpoint, **to_data(result.report)})
            return
        show_distill(result.report, result.checkpoint)


def show_distill(report: DistillReport, checkpoint: str) -> None:
    from rich.table import Table

    lat = report.latency
    table = Table(title=f"distillation on {report.data.train} ({report.data.train_images} images, "
                        f"{report.config.epochs} epochs, {report.processes} process(es))")
    for col in ("role", "model", "params (M)", "GMACs", "top-1 %", f"p50 ms ({lat.runtime if lat else '-'})"):
        table.add_column(col, justify="right" if col not in ("role", "model") else "left")
    for role, m, p50 in (("teacher", report.teacher, lat and lat.teacher_p50_ms),
                         ("student", report.student, lat and lat.student_p50_ms)):
        table.add_row(role, m.name, fmt(m.params_m, 2), fmt(m.gmacs, 3), fmt(m.top1), fmt(p50, 3))
    out = console()
    out.print(table)
    if report.top1_gap is not None:
        gap = report.top1_gap
        out.print(f"student top-1 is {abs(gap):.2f} points {'below' if gap >= 0 else 'above'} the teacher's "
                  f"(on {report.data.eval}, {report.data.eval_images} images)")
    if lat:
        out.print(f"student is {lat.speedup:.2f}x faster at batch 1 ({lat.runtime}, {lat.threads} threads)")
    cache = report.teacher_cache
    if cache:
        out.print(f"teacher outputs: {cache.computed} computed, {cache.reused} reused from {cache.folder}")
    out.print(f"throughput {fmt(report.throughput_images_s, 1)} images/s; train time {report.train_time_s:.0f} s")
    out.print(f"student checkpoint: {checkpoint} (edgevision compress --checkpoint {checkpoint} --int8)")
