"""Build a model from a name and weights: timm pretrained, a local checkpoint, or random init."""
from __future__ import annotations

import dataclasses
import functools
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import edgevision.models.hf as hf  # the module itself, not through the package being initialised
from edgevision.data.loader import DATA_CONFIG_KEYS, DataConfig
from edgevision.errors import ModelError
from edgevision.models.checkpoint import check_fits, read_checkpoint, strip_prefixes
from edgevision.models.resize import InputResize, rebuild_kwargs, resize_input
from edgevision.models.structure import Structure, apply_structure
from edgevision.models.weights import WeightRequest, WeightSource, may_download, register_weight_source, weight_source
from edgevision.models.zoo import (
    ModelKwargs,
    ResolvedName,
    accepts_img_size,
    default_pretrained_tag,
    family_of,
    resolve_name,
    timm_with_students,
)


@dataclass
class ModelSpec:
    """Everything needed to rebuild the model and feed it: recorded in checkpoints and reports."""

    name: str
    timm_name: str
    num_classes: int
    img_size: int
    model_kwargs: ModelKwargs
    weights: str  # "pretrained", "random" or "checkpoint"
    data_config: DataConfig
    classes: list[str] | None = None
    checkpoint: str | None = None
    structure: Structure | None = None  # a pruned model's changed attributes (compression/prune.py)
    resized: InputResize | None = None  # weights made at another input size: what was adapted
    family: str = field(init=False)

    def __post_init__(self):
        self.family = family_of(self.timm_name)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def input_size(self) -> tuple[int, int, int]:
        return tuple(self.data_config["input_size"])


def random_weights_warning(spec: ModelSpec, role: str = "") -> str | None:
    """The one warning for random weights, or None (`role`: whose weights, e.g. "teacher")."""
    if spec.weights != "random":
        return None
    whose = f"the {role} weights" if role else "weights"
    return f"{whose} are random: accuracy numbers are meaningless, latency is real"


@dataclass
class LoadedModel:
    model: Any  # torch.nn.Module, in eval mode (or an artifact's path, pipeline/artifacts.py)
    spec: ModelSpec
    runner_options: dict[str, str] = field(default_factory=dict)  # an artifact's, e.g. OpenVINO's precision


def load_model(
    name: str | None = None,
    *,
    weights: str | None = None,
    checkpoint: str | Path | None = None,
    num_classes: int | None = None,
    img_size: int | None = None,
    model_kwargs: ModelKwargs | None = None,
    seed: int | None = None,
    log=lambda message: None,
) -> LoadedModel:
    """The one door to a model, mirroring `--weights`, `--checkpoint`, `--num-classes`, `--img-size`, `--seed`.

    weights=None picks `checkpoint` when one is given, else `pretrained` when timm has pretrained weights
    for the architecture as configured, else `random`. Other names are weight sources registered in
    models/weights.py (`fashion-mnist`: edgevision's own float model for a *_mini alias, trained on first use).
    """
    transformers_source = hf.transformers_source(name, checkpoint)
    if transformers_source is not None:
        if weights is not None or model_kwargs:
            raise ModelError("a Transformers model carries its weights and configuration",
                             "drop --weights and --model-arg")
        return _load_transformers(transformers_source, num_classes, img_size, log)
    source = weight_source(weights) if weights is not None else None
    if checkpoint is not None:
        if source is not None:
            raise ModelError(f"--weights {weights} and --checkpoint both given", "use one of them")
        return _load_from_checkpoint(name, Path(checkpoint), num_classes, img_size, model_kwargs, log)
    if name is None:
        raise ModelError("no model given", "name a model (see `edgevision models`) or pass --checkpoint")
    request = WeightRequest(name, num_classes, img_size, dict(model_kwargs or {}), log, seed)
    if source is None:
        source = weight_source(_default_weights(request))
    return source.load(request)


def _default_weights(request: WeightRequest) -> str:
    resolved = resolve_name(request.name)
    kwargs = {**resolved.model_kwargs, **request.model_kwargs}
    pretrained = not kwargs and resolved.pretrained_default and default_pretrained_tag(resolved.timm_name) is not None
    return "pretrained" if pretrained else "random"


def _load_random(request: WeightRequest) -> LoadedModel:
    import torch  # heavy: imported when a model is built

    resolved = resolve_name(request.name)
    kwargs = {**resolved.model_kwargs, **request.model_kwargs}
    with torch.random.fork_rng(devices=[]):  # a seed fixes the initial weights; the caller's RNG is left alone
        if request.seed is not None:
            torch.manual_seed(request.seed)
        model = _build(resolved, kwargs, request.num_classes, request.img_size)
    return LoadedModel(model.eval(), _spec(resolved, model, kwargs, "random", request.img_size))


def _load_pretrained(request: WeightRequest) -> LoadedModel:
    resolved = resolve_name(request.name)
    kwargs = {**resolved.model_kwargs, **request.model_kwargs}
    if kwargs:
        raise ModelError(f"'{request.name}' is configured with {sorted(kwargs)}, which no pretrained weights fit",
                         "use --weights random or --checkpoint PATH")
    weights_file = pretrained_weights_file(resolved.timm_name)
    model = _build(resolved, kwargs, request.num_classes, None, pretrained_file=weights_file)
    return _at_size(LoadedModel(model.eval(), _spec(resolved, model, kwargs, "pretrained", None)),
                    request.img_size, request.log)


def _load_transformers(source: str, num_classes: int | None, img_size: int | None, log) -> LoadedModel:
    """A Transformers image classifier as a timm model, its logits checked against the original's (models/hf.py):
    converted into its timm equivalent where there is one, else wrapped as a generic model."""
    original, config, processor = hf.open_hf(source)
    labels = hf.label_count(config)
    preprocessing = hf.data_config(processor, config)
    size = config.get("image_size") or preprocessing["input_size"][-1]  # a size-free CNN: the processor's
    size, channels = hf.side(size), config.get("num_channels", 3)
    name = f"{hf.HF_PREFIX}{Path(source).name if Path(source).is_dir() else source}"
    model, timm_name, kwargs = _timm_twin(original, config, source, name, labels, size)
    gap = hf.logits_gap(original, model.eval(), (channels, size, size))
    if gap > hf.LOGITS_ATOL:
        raise ModelError(f"{source} as timm {timm_name} gives other logits (off by {gap:.2g})",
                         "this variant of the architecture is not convertible; use a timm model")
    how = "converted to timm" if timm_name != hf.GENERIC_NAME else "runs as a generic model (no pruning) as"
    log(f"{source} ({type(original).__name__}) {how} {timm_name}: logits within {gap:.1g}")
    data_config = {**preprocessing, "input_size": [channels, size, size]}
    spec = ModelSpec(name=name, timm_name=timm_name, num_classes=labels, img_size=size, model_kwargs=kwargs,
                     weights="checkpoint", data_config=data_config, classes=hf.classes(config), checkpoint=source)
    if num_classes is not None and num_classes != labels:  # a new dataset: a new classifier, as timm's pretrained
        model.reset_classifier(num_classes)
        spec = dataclasses.replace(spec, num_classes=num_classes, classes=None)
        log(f"new {num_classes}-class classifier in place of the checkpoint's {labels} classes")
    return _at_size(LoadedModel(model.eval(), spec), img_size, log)


def _timm_twin(original, config: dict, source: str, name: str, labels: int, size: int) -> tuple[Any, str, dict]:
    """(the timm model holding the original's weights, its timm name, its constructor arguments as data)."""
    convert = hf.CONVERSIONS.get(config["model_type"])
    if convert is None:  # models/hf_generic.py
        kwargs = {"transformers_config": json.loads(original.config.to_json_string(use_diff=False)),
                  "in_chans": config.get("num_channels", 3)}
        model = _build(ResolvedName(name, hf.GENERIC_NAME, None, kwargs, {}), kwargs, labels, None)
        model.net.load_state_dict(original.state_dict())
        return model, hf.GENERIC_NAME, kwargs
    kwargs = convert.kwargs(config)
    model = _build(ResolvedName(name, convert.timm_name, size, kwargs, {}), kwargs, labels, size)
    state = convert.rename(hf.stored_weights(source), model)
    check_fits(model, state, name)
    model.load_state_dict(state)
    return model, convert.timm_name, kwargs


def _at_size(loaded: LoadedModel, img_size: int | None, log) -> LoadedModel:
    """`loaded` adapted to `img_size` when its weights were made at another size (timm's set_input_size)."""
    spec = loaded.spec
    if img_size is None or img_size == spec.img_size:
        return loaded
    resize = resize_input(loaded.model, spec.img_size, img_size)
    log(resize.summary())
    data_config = {**spec.data_config, "input_size": [spec.input_size[0], img_size, img_size]}
    kwargs = {**spec.model_kwargs, **rebuild_kwargs(loaded.model)}
    return LoadedModel(loaded.model, dataclasses.replace(spec, img_size=img_size, data_config=data_config,
                                                         model_kwargs=kwargs, resized=resize))


register_weight_source(WeightSource("pretrained", "timm's pretrained weights (Hugging Face cache)", _load_pretrained))
register_weight_source(WeightSource("random", "random initialisation (speed-only work)", _load_random))


def load_checkpoint_file(request: WeightRequest, path: Path, check_meta=lambda meta: None) -> LoadedModel:
    """A model from a checkpoint file that a weight source found (the same checks as --checkpoint);
    `check_meta(meta)` sees the checkpoint's edgevision metadata first (read once)."""
    state, meta = read_checkpoint(path)
    check_meta(meta)
    return _model_from_checkpoint(request.name, path, state, meta, request.num_classes, request.img_size,
                                  request.model_kwargs or None, request.log)


# What a run directory given as --checkpoint holds: distill's student, compress/prune's float model.
RUN_DIR_CHECKPOINTS = ("student.pt", "model.safetensors")


def _load_from_checkpoint(name, path: Path, num_classes, img_size, model_kwargs, log) -> LoadedModel:
    if path.is_dir():
        found = [path / f for f in RUN_DIR_CHECKPOINTS if (path / f).is_file()]
        if not found:
            raise ModelError(f"{path} is a folder without a checkpoint in it",
                             f"pass the checkpoint file, or a run directory holding {' or '.join(RUN_DIR_CHECKPOINTS)}")
        path = found[0]
    state, meta = read_checkpoint(path)
    return _model_from_checkpoint(name, path, state, meta, num_classes, img_size, model_kwargs, log)


def _model_from_checkpoint(name, path: Path, state, meta, num_classes, img_size, model_kwargs, log) -> LoadedModel:
    state = strip_prefixes(state)
    if meta is not None:  # an edgevision checkpoint knows its model
        return _at_size(_from_edgevision_checkpoint(name, path, state, meta, num_classes), img_size, log)
    if name is None:
        raise ModelError(f"checkpoint {path} is a plain state dict that does not name its model",
                         "give the model name too, e.g. `edgevision evaluate convnext_t --checkpoint ...`")
    resolved = resolve_name(name)
    kwargs = {**resolved.model_kwargs, **(model_kwargs or {})}
    if num_classes is None:
        num_classes = _classes_in_state(resolved, kwargs, state)
    # A plain state dict does not say its input size: the default one, else the one asked for (then no resizing).
    built_at = None
    model = _build(resolved, kwargs, num_classes, None)
    if img_size is not None and not _fits(model, state):
        built_at, model = img_size, _build(resolved, kwargs, num_classes, img_size)
    check_fits(model, state, str(path))
    model.load_state_dict(state)
    spec = _spec(resolved, model, kwargs, "checkpoint", built_at)
    spec.checkpoint = str(path)
    return _at_size(LoadedModel(model.eval(), spec), img_size, log)


def _from_edgevision_checkpoint(name, path: Path, state, meta, num_classes) -> LoadedModel:
    """The model an edgevision checkpoint records, at the size it was made at."""
    m = meta["model"]
    if name is not None and resolve_name(name).architecture != m["timm_name"].split(".")[0]:
        raise ModelError(f"checkpoint {path} holds a {m['timm_name']} model, not {name}",
                         "drop the model name or pick the matching checkpoint")
    if num_classes is not None and num_classes != m["num_classes"]:
        raise ModelError(f"--num-classes {num_classes} differs from the checkpoint's {m['num_classes']}",
                         "drop --num-classes: the checkpoint records it")
    resolved = ResolvedName(m["name"], m["timm_name"], m["img_size"], m["model_kwargs"], {})
    model = _build(resolved, m["model_kwargs"], m["num_classes"], m["img_size"])
    structure = m.get("structure")
    if structure:  # a pruned model: the recorded attributes, and tensor shapes from the weights
        apply_structure(model, structure, state)
    check_fits(model, state, str(path))
    model.load_state_dict(state)
    spec = ModelSpec(
        name=m["name"], timm_name=m["timm_name"], num_classes=m["num_classes"],
        img_size=m["img_size"], model_kwargs=m["model_kwargs"], weights="checkpoint",
        data_config=dict(meta["data_config"]), classes=meta.get("classes"), checkpoint=str(path),
        structure=structure or None,
    )
    return LoadedModel(model.eval(), spec)


def _fits(model, state: dict) -> bool:
    try:
        check_fits(model, state, "")
        return True
    except ModelError:
        return False


def _classes_in_state(resolved: ResolvedName, kwargs: dict, state: dict) -> int | None:
    """Read the class count off the checkpoint's classifier weight, so users need not say it."""
    import torch

    timm = timm_with_students()

    with torch.device("meta"):
        probe = timm.create_model(resolved.timm_name, pretrained=False, **kwargs)
    classifier = probe.pretrained_cfg.get("classifier")
    key = f"{classifier}.weight" if classifier else None
    if key and key in state and state[key].ndim >= 1:
        return int(state[key].shape[0])
    return None


def _build(resolved: ResolvedName, kwargs: dict, num_classes, img_size, pretrained_file=None):
    timm = timm_with_students()

    size = img_size or resolved.img_size
    build_kwargs = dict(kwargs)
    if "layer_norm_eps" in build_kwargs:  # as data in the spec; timm takes it as a LayerNorm with that eps
        build_kwargs["norm_layer"] = functools.partial(_layer_norm(), eps=build_kwargs.pop("layer_norm_eps"))
    if num_classes is not None:
        build_kwargs["num_classes"] = num_classes
    if size is not None and accepts_img_size(resolved.architecture):
        build_kwargs["img_size"] = size
    extra = {}
    if pretrained_file is not None:
        extra = {"pretrained": True, "pretrained_cfg_overlay": {"file": str(pretrained_file)}}
    try:
        return timm.create_model(resolved.timm_name, **extra, **build_kwargs)
    except (TypeError, ValueError, AssertionError, RuntimeError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ModelError(f"timm cannot build {resolved.timm_name} with {build_kwargs}: {msg}",
                         "check --img-size and the model arguments") from None


def _layer_norm():
    import torch

    return torch.nn.LayerNorm


def _spec(resolved: ResolvedName, model, kwargs, weights: str, img_size: int | None) -> ModelSpec:
    import timm.data

    cfg = timm.data.resolve_model_data_config(model)
    size = img_size or resolved.img_size or cfg["input_size"][-1]
    # timm reports the pretrained config's size even when the model was built for another one.
    cfg["input_size"] = (3, size, size)
    cfg.update(resolved.data_overrides)
    data_config = {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items() if k in DATA_CONFIG_KEYS}
    return ModelSpec(
        name=resolved.name, timm_name=resolved.timm_name, num_classes=model.num_classes, img_size=size,
        model_kwargs=dict(kwargs), weights=weights, data_config=data_config,
    )


def pretrained_weights_file(timm_name: str, cache_dir: str | None = None) -> Path:
    """Path of timm's pretrained weights in the local Hugging Face cache, downloading if reachable.

    Offline and not cached fails at once with the alternatives, instead of timm's minute of retries.
    """
    from timm.models import get_pretrained_cfg

    tagged = default_pretrained_tag(timm_name)
    if tagged is None:
        raise ModelError(f"timm has no pretrained weights for {timm_name}",
                         "use --weights random or --checkpoint PATH")
    arch, _, tag = tagged.partition(".")
    cfg = get_pretrained_cfg(tagged)
    if cfg is None:
        raise ModelError(f"timm has no pretrained weights tagged '{tag}' for {arch}",
                         "drop the tag or see timm.list_pretrained()")
    if cfg.file:
        return Path(cfg.file)
    if not cfg.hf_hub_id:
        raise ModelError(f"pretrained weights for {tagged} are not on the Hugging Face hub",
                         "download them yourself and pass --checkpoint PATH")
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    filenames = ("open_clip_pytorch_model.bin", "model.safetensors", "pytorch_model.bin") \
        if cfg.hf_hub_filename == "open_clip_pytorch_model.bin" else ("model.safetensors", "pytorch_model.bin")
    for filename in filenames:
        cached = try_to_load_from_cache(cfg.hf_hub_id, filename, cache_dir=cache_dir)
        if isinstance(cached, str):
            return Path(cached)
    if not may_download():
        raise ModelError(
            f"pretrained weights for {tagged} are not in the local cache and the hub cannot be reached",
            "use --checkpoint PATH, --weights random (speed only), or run once online to cache them",
        )
    try:
        return Path(hf_hub_download(cfg.hf_hub_id, "model.safetensors", cache_dir=cache_dir))
    except Exception as e:  # noqa: BLE001 - any hub failure is the same user-facing problem
        raise ModelError(f"downloading pretrained weights for {tagged} failed: {e}",
                         "use --checkpoint PATH or --weights random") from None
