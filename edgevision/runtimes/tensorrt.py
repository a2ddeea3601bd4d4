"""TensorRT (Jetson): the trtexec command line, the device build script, the INT8 rules check, engines.

TensorRT builds engines on the device that runs them (an engine is tied to its TensorRT version, GPU and
L4T release), and TensorRT 11 accepts INT8 only as explicit Q/DQ in the ONNX graph. So edgevision ships a
bundle (Q/DQ ONNX + build script + manifest) and everything here except the engine builder and runner is
pure Python that runs and is tested on any machine. `import tensorrt` happens only inside the engine parts.
"""
from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgevision.errors import EdgevisionError
from edgevision.io import atomic_write_text, write_json
from edgevision.runtimes import Runner, RunnerInfo, register_runner
from edgevision.runtimes.device_identity import identity
from edgevision.typed import from_data, to_data

if TYPE_CHECKING:
    from onnx import TensorProto  # onnx loads when a graph is checked

INSTALL_HINT = ('install the TensorRT extra on the device (pip install "edgevision[tensorrt]"), or copy the '
                'bundle to the Jetson and run ./build_engine.sh there')


class TensorRTMissing(EdgevisionError):
    pass


class EngineMismatch(EdgevisionError):
    exit_code = 3


# --- the trtexec command line ------------------------------------------------------------------------
@dataclass
class EngineOptions:
    """How the device should build the engine; recorded in the bundle's manifest."""

    input_name: str
    input_shape: tuple[int, int, int]  # C, H, W
    int8: bool = True  # the ONNX carries Q/DQ
    fp16: bool = True  # layers outside Q/DQ in FP16 rather than FP32
    batch: int = 1  # static batch, or the optimisation point of a dynamic one
    dynamic_batch: bool = False
    max_batch: int = 32
    dla_core: int | None = None  # Jetson Orin/Xavier DLA, with GPU fallback
    workspace_mb: int | None = None
    fp32_layers: tuple[str, ...] = ()  # kept in FP32 under --fp16: the FP16 pre-flight's findings (ONNX node names)
    fp16_layers: tuple[str, ...] = ()  # left out of INT8 by the accuracy guard: pinned to FP16 (ONNX node names)
    onnx: str = "model.onnx"
    engine: str = "model.engine"
    timing_cache: str = "timing.cache"
    # an INT8 bundle's float graph: the device builds it as an FP16 engine too, times both and keeps the faster
    float_onnx: str | None = None
    int8_vouched: bool = True  # the Q/DQ graph's simulated accuracy held the budget (or no budget was set)

    def shape(self, batch: int) -> str:
        return "x".join(str(d) for d in (batch, *self.input_shape))


def trtexec_args(opts: EngineOptions, trt_major: int, onnx: str | None = None) -> list[str]:
    """trtexec arguments (without the program) for a TensorRT major version.

    TensorRT 10 builds weakly typed networks: `--int8` lets Q/DQ layers run in INT8 and `--fp16` lets the
    rest fall back to FP16 instead of FP32. TensorRT 11 removed every precision flag (networks are strongly
    typed), so the precision comes from the ONNX itself; FP16 outside Q/DQ needs an FP16-cast ONNX, which
    the build script makes with ModelOpt AutoCast and passes here as `onnx`.
    """
    if trt_major < 10:
        raise EdgevisionError(f"TensorRT {trt_major} is not supported", "use TensorRT 10 (JetPack 6) or 11")
    args = [f"--onnx={onnx or opts.onnx}", f"--saveEngine={opts.engine}", f"--timingCacheFile={opts.timing_cache}"]
    if opts.dynamic_batch:
        args += [f"--minShapes={opts.input_name}:{opts.shape(1)}",
                 f"--optShapes={opts.input_name}:{opts.shape(opts.batch)}",
                 f"--maxShapes={opts.input_name}:{opts.shape(opts.max_batch)}"]
    if trt_major == 10:
        args += ["--int8"] if opts.int8 else []
        args += ["--fp16"] if opts.fp16 else []
        pinned = layer_precisions(opts)
        if pinned:  # TensorRT names its layers after the ONNX nodes
            args += ["--precisionConstraints=obey",
                     "--layerPrecisions=" + ",".join(f"{name}:{p}" for name, p in pinned.items())]
    if opts.dla_core is not None:
        args += [f"--useDLACore={opts.dla_core}", "--allowGPUFallback"]
    if opts.workspace_mb:
        args += [f"--memPoolSize=workspace:{opts.workspace_mb}"]
    return args


def decides_on_device(opts: EngineOptions) -> bool:
    """Whether the device builds both an INT8 and an FP16 engine and keeps the faster (an INT8 bundle with FP16
    fallback that carries its float graph)."""
    return opts.int8 and opts.fp16 and opts.float_onnx is not None


def engine_variants(opts: EngineOptions) -> dict[str, EngineOptions]:
    """precision -> how to build it: the bundle's own engine, plus the float graph's FP16 engine where the
    device decides (each to its own file until one is kept as opts.engine)."""
    if not decides_on_device(opts):
        return {"int8" if opts.int8 else ("fp16" if opts.fp16 else "fp32"): opts}
    return {"int8": replace(opts, engine="model.int8.engine"),
            "fp16": replace(opts, int8=False, onnx=opts.float_onnx, engine="model.fp16.engine", fp16_layers=())}


def resolve_precision(asked: str | None, opts: EngineOptions) -> str:
    """The engine to build: the asked precision (one of engine_variants, or auto where the device decides), by
    default auto where the device decides, else the bundle's own; auto becomes fp16 when the INT8 graph missed
    the accuracy budget at export."""
    variants = engine_variants(opts)
    choices = [*variants, "auto"] if decides_on_device(opts) else list(variants)
    choice = asked or choices[-1]
    if choice not in choices:
        raise EdgevisionError(f"--precision {choice}: this bundle builds {' or '.join(choices)}",
                              "pick one of those, or export a bundle of that precision")
    return "fp16" if choice == "auto" and not opts.int8_vouched else choice


def layer_precisions(opts: EngineOptions) -> dict[str, str]:
    """ONNX node -> the precision TensorRT 10 must give it (with --fp16 only): FP32 for the FP16 pre-flight's
    findings, FP16 for the nodes the accuracy guard left out of INT8."""
    if not opts.fp16:
        return {}
    return {**{name: "fp16" for name in opts.fp16_layers}, **{name: "fp32" for name in opts.fp32_layers}}


SCRIPT_TEMPLATE = Path(__file__).with_name("build_engine.sh")
IDENTITY_SCRIPT = Path(__file__).with_name("device_identity.py")


def build_script(opts: EngineOptions, tool_version: str) -> str:
    """build_engine.sh: picks the TensorRT major version on the device and runs trtexec with its flags; where the
    device decides (decides_on_device), builds both engines, times them and keeps the faster.

    The script is package data (runtimes/build_engine.sh) with placeholders. Every file name is shell-quoted,
    and the script works from its own directory, so a bundle under a path with spaces or quotes builds as is.
    TRTEXEC, TRT_MAJOR and PRECISION (or --precision) can be set to override the detection and the choice.
    """
    q = shlex.quote
    variants = engine_variants(opts)
    precisions = [*variants, "auto"] if decides_on_device(opts) else list(variants)
    shapes = f"--shapes={opts.input_name}:{opts.shape(opts.batch)} " if opts.dynamic_batch else ""
    values = {"@TOOL_VERSION@": tool_version, "@PRECISIONS@": " ".join(precisions),
              "@DEFAULT_PRECISION@": precisions[-1] if decides_on_device(opts) else precisions[0],
              "@INT8_VOUCHED@": "yes" if opts.int8_vouched else "no", "@ENGINE@": q(opts.engine),
              "@TIME_SHAPES@": q(shapes.strip()) + " " if shapes else "",
              "@BUILD_CASES@": "\n".join(_build_case(name, v) for name, v in variants.items()),
              "@ENGINE_CASES@": "\n".join(f"    {name}) echo {q(v.engine)} ;;" for name, v in variants.items())}
    script = SCRIPT_TEMPLATE.read_text(encoding="utf-8")
    for placeholder, value in values.items():
        script = script.replace(placeholder, value)
    return script


def _build_case(name: str, opts: EngineOptions) -> str:
    """One precision's branch of build(): trtexec for TensorRT 11 (from an AutoCast FP16 copy when the float
    layers run in FP16) or for TensorRT 10 (with its precision flags)."""
    q = shlex.quote
    line11 = " ".join(q(a) for a in trtexec_args(opts, 11, onnx="__ONNX__")).replace(
        q("--onnx=__ONNX__"), '--onnx="$onnx"')
    cast = (f'onnx=$(fp16_onnx {q(opts.onnx)} {q(Path(opts.onnx).stem + ".fp16.onnx")}{_autocast_exclude(opts)})'
            if opts.fp16 else f"onnx={q(opts.onnx)}")
    line10 = " ".join(q(a) for a in trtexec_args(opts, 10))
    return (f"    {name})\n      if [ \"$major\" -ge 11 ]; then\n        {cast}\n        \"$trtexec\" {line11}\n"
            f"      else\n        \"$trtexec\" {line10}\n      fi ;;")


def _autocast_exclude(opts: EngineOptions) -> str:
    """AutoCast's node exclusion (regular expressions, one per node) for TensorRT 11's FP16 cast, or nothing."""
    if not opts.fp32_layers:
        return ""
    return " --nodes_to_exclude " + " ".join(shlex.quote(f"^{re.escape(name)}$") for name in opts.fp32_layers)


def write_build_files(bundle: Path, opts: EngineOptions, tool_version: str) -> list[Path]:
    """build_engine.sh and the device_identity.py it runs after the build, into the bundle."""
    script = atomic_write_text(bundle / "build_engine.sh", build_script(opts, tool_version))
    script.chmod(0o755)
    identity = atomic_write_text(bundle / IDENTITY_SCRIPT.name, IDENTITY_SCRIPT.read_text(encoding="utf-8"))
    return [script, identity]


# --- TensorRT's INT8 rules, checked on the ONNX graph -----------------------------------------------------
# Ops that may consume a dequantized INT8 tensor and still run (or pass through) in INT8 in TensorRT:
# the weighted ops, the data-movement and pooling ops its Q/DQ propagation moves scales across, and Shape
# (which reads only the shape).
INT8_CONSUMERS = frozenset({
    "Conv", "ConvTranspose", "MatMul", "Gemm", "Add", "Concat", "MaxPool", "AveragePool", "GlobalAveragePool",
    "Relu", "Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Slice", "Pad", "Identity", "Shape",
})
WEIGHT_AXIS = {"Conv": lambda node, rank: 0, "ConvTranspose": lambda node, rank: 1,
               "MatMul": lambda node, rank: rank - 1,
               "Gemm": lambda node, rank: 0 if _attr(node, "transB", 0) else 1}
MIN_OPSET = 17
WEIGHTED_OPS = {"Conv", "ConvTranspose", "Gemm", "MatMul"}
COPY_OPS = {"Transpose", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity"}
# pointwise ops TensorRT fuses after a weighted op (with constant operands: layer scale, bias)
EPILOGUE_OPS = {"Mul", "Add", "Sub", "Div", "Relu", "Sigmoid", "Tanh", "Clip", "LeakyRelu", "HardSigmoid", "HardSwish"}


@dataclass
class RuleViolation:
    rule: str  # opset | zero-point | constant-scale | weight-axis | int8-consumer | residual-add | float-output
    node: str
    message: str

    def __str__(self) -> str:
        return f"[{self.rule}] {self.node}: {self.message}"


@dataclass
class RulesReport:
    violations: list[RuleViolation] = field(default_factory=list)
    quantize_ops: int = 0
    dequantize_ops: int = 0
    int8_weights: int = 0

    @property
    def passed(self) -> bool:
        return not self.violations

    def summary(self) -> RulesSummary:
        return RulesSummary(self.passed, self.quantize_ops, self.dequantize_ops, self.int8_weights,
                            [str(v) for v in self.violations])


@dataclass
class RulesSummary:
    """A rules check as the bundle's report and manifest hold it: each violation as one line."""

    passed: bool
    quantize_ops: int
    dequantize_ops: int
    int8_weights: int
    violations: list[str]


def check_int8_rules(model) -> RulesReport:
    """Check an ONNX model (onnx.ModelProto) against what TensorRT's explicit INT8 needs.

    - opset: the default-domain opset is at least 17;
    - zero-point / constant-scale: every QuantizeLinear/DequantizeLinear has a constant scale and an INT8
      zero point that is 0 (no zero point means UINT8, which TensorRT rejects);
    - weight-axis: weights are per-channel on the output-channel axis of their consumer (Conv 0,
      ConvTranspose 1, MatMul last, Gemm by transB), one scale per channel;
    - int8-consumer: a DequantizeLinear only feeds ops TensorRT runs in INT8 (not LayerNorm, Softmax, GELU...),
      except a Conv output that feeds a LayerNorm;
    - residual-add: an Add fed by a DequantizeLinear gets all its inputs dequantized, or one of its inputs comes
      out of a Conv/Gemm/MatMul (through bias/scale ops) that TensorRT fuses with it;
    - float-output: no graph output comes out of a DequantizeLinear (the logits are not rounded to INT8).
    """
    from onnx import numpy_helper

    graph = model.graph
    report = RulesReport()
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < MIN_OPSET:
        report.violations.append(RuleViolation("opset", "model", f"opset {opset}, TensorRT export needs >= {MIN_OPSET}"))
    constants = graph_constants(graph)
    producers = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def value(name):
        return numpy_helper.to_array(constants[name]) if name in constants else None

    for node in graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        label = node.name or node.output[0]
        report.quantize_ops += node.op_type == "QuantizeLinear"
        report.dequantize_ops += node.op_type == "DequantizeLinear"
        _check_scale_and_zero_point(node, label, constants, report)
        if node.op_type != "DequantizeLinear":
            continue
        users = consumers.get(node.output[0], [])
        weight = value(node.input[0]) if node.input[0] in constants else None
        if weight is not None:
            report.int8_weights += 1
            _check_weight(node, label, weight, value(node.input[1]), users, report)
        for user in users:
            _check_consumer(label, node, user, producers, constants, report)
    for out in graph.output:
        if out.name in producers and producers[out.name].op_type == "DequantizeLinear":
            report.violations.append(RuleViolation("float-output", out.name, "the graph output is dequantized "
                                                   "INT8; keep the model's output in float"))
    report.violations = _unique(report.violations)
    return report


def _check_consumer(label: str, dq, user, producers, constants, report: RulesReport) -> None:
    """int8-consumer and residual-add for one consumer of a DequantizeLinear. Placements TensorRT's guide
    recommends (and Model Optimizer writes) pass: the skip input of a residual Add quantized when the Add's
    other input comes out of a Conv/Gemm/MatMul (TensorRT fuses the Add into that op, with an INT8 residual);
    a Conv/Gemm/MatMul output quantized (the op writes INT8, fused) where an Add or a LayerNorm after a Conv
    reads it."""
    quantized = producers.get(dq.input[0])
    source = quantized.input[0] if quantized is not None and quantized.op_type == "QuantizeLinear" else None
    if source and _conv_output_for_norm(user, source, producers, constants):
        return
    if user.op_type not in INT8_CONSUMERS:
        report.violations.append(RuleViolation(
            "int8-consumer", label, f"feeds {user.op_type} '{user.name}', which TensorRT does not run in INT8; "
            "leave it unquantized"))
    elif user.op_type == "Add":
        plain = [i for i in user.input if i in producers and producers[i].op_type != "DequantizeLinear"
                 and i not in constants]
        fused = COPY_OPS | EPILOGUE_OPS
        written_int8 = source is not None and _made_by(source, WEIGHTED_OPS, fused, producers, constants)
        if not written_int8 and any(not _made_by(i, WEIGHTED_OPS, fused, producers, constants) for i in plain):
            report.violations.append(RuleViolation(
                "residual-add", label, f"feeds Add '{user.name}' whose other input is not quantized, and neither input "
                "comes out of a Conv/Gemm/MatMul TensorRT fuses with it; quantize both inputs or neither"))


def float_readers(model) -> set[str]:
    """The nodes that read an INT8 activation but that TensorRT runs in float and cannot take it from a fused op
    (the int8-consumer rule): give them the float tensor instead."""
    graph = model.graph
    constants, producers = graph_constants(graph), {out: node for node in graph.node for out in node.output}
    found = set()
    for node in graph.node:
        if node.op_type in INT8_CONSUMERS or node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        for name in node.input:
            dq = producers.get(name)
            q = producers.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
            if q is not None and q.op_type == "QuantizeLinear" and not _conv_output_for_norm(
                    node, q.input[0], producers, constants):
                found.add(node.name)
    return found


def graph_constants(graph) -> dict[str, TensorProto]:
    """name -> TensorProto of every constant: initializers, Constant nodes, and Identity of a constant (the
    exporter's shared weights)."""
    constants = {init.name: init for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute:
            constants[node.output[0]] = node.attribute[0].t
        elif node.op_type == "Identity" and node.input[0] in constants:
            constants[node.output[0]] = constants[node.input[0]]
    return constants


def _conv_output_for_norm(user, source: str, producers, constants) -> bool:
    """A LayerNorm reading a quantized Conv output (ModelOpt's Conv->LayerNorm placement): the Conv writes INT8."""
    return user.op_type == "LayerNormalization" and _made_by(source, {"Conv"}, COPY_OPS | EPILOGUE_OPS, producers,
                                                             constants)


def _made_by(tensor: str, ops: set[str], through: set[str], producers, constants, depth: int = 0) -> bool:
    """Whether `tensor` is the output of one of `ops`, directly or through `through` ops whose other inputs are
    constants (a layer scale, a bias, a transpose), or through a residual Add one of whose inputs is."""
    node = producers.get(tensor)
    if node is None or depth > 8:
        return False
    if node.op_type in ops:
        return True
    varying = [i for i in node.input if i and i not in constants]
    if node.op_type not in through or (len(varying) != 1 and node.op_type != "Add"):
        return False
    return any(_made_by(i, ops, through, producers, constants, depth + 1) for i in varying)


def _check_scale_and_zero_point(node, label: str, constants: dict[str, TensorProto], report: RulesReport) -> None:
    """A Q/DQ node's scale is a constant; its zero point a constant INT8 0 (none means UINT8)."""
    from onnx import TensorProto, numpy_helper

    if node.input[1] not in constants:
        report.violations.append(RuleViolation("constant-scale", label, "scale is not a constant"))
    zp_name = node.input[2] if len(node.input) > 2 and node.input[2] else None
    if zp_name is None:
        report.violations.append(RuleViolation("zero-point", label, "no zero point (means UINT8); give an INT8 zero point 0"))
    elif zp_name not in constants:
        report.violations.append(RuleViolation("zero-point", label, "zero point is not a constant"))
    elif constants[zp_name].data_type != TensorProto.INT8:
        report.violations.append(RuleViolation(
            "zero-point", label, f"zero point is {TensorProto.DataType.Name(constants[zp_name].data_type)}, not INT8"))
    elif np.any(numpy_helper.to_array(constants[zp_name]) != 0):
        report.violations.append(RuleViolation("zero-point", label, "zero point is not 0 (asymmetric)"))


def check_int8_rules_of(path: Path) -> RulesReport:
    """check_int8_rules on an ONNX file."""
    import onnx  # heavy: only to read the graph

    return check_int8_rules(onnx.load(str(path)))


def _check_weight(node, label, weight, scale, users, report: RulesReport) -> None:
    if scale is None:
        return
    for user in users:
        if user.op_type not in WEIGHT_AXIS or list(user.input).index(node.output[0]) != 1:
            continue
        want = WEIGHT_AXIS[user.op_type](user, weight.ndim)
        channels = weight.shape[want]
        if np.ndim(scale) == 0 or np.size(scale) == 1:
            report.violations.append(RuleViolation(
                "weight-axis", label, f"per-tensor weight scale for {user.op_type}; use per-channel on axis {want}"))
            continue
        axis = _attr(node, "axis", 1)
        axis = axis + weight.ndim if axis < 0 else axis
        if axis != want or np.size(scale) != channels:
            report.violations.append(RuleViolation(
                "weight-axis", label, f"weight scales on axis {axis} ({np.size(scale)} values) for {user.op_type}; "
                f"TensorRT needs axis {want} ({channels} output channels)"))


def _attr(node, name: str, default):
    for a in node.attribute:
        if a.name == name:
            return a.i
    return default


def _unique(items: list[RuleViolation]) -> list[RuleViolation]:
    seen, out = set(), []
    for v in items:
        if str(v) not in seen:
            seen.add(str(v))
            out.append(v)
    return out


# --- engines: need TensorRT (on the device) ------------------------------------------------------------
def import_tensorrt():
    try:
        import tensorrt
    except ImportError:
        raise TensorRTMissing("TensorRT is not installed here", INSTALL_HINT) from None
    return tensorrt


@dataclass(frozen=True)
class DeviceIdentity:
    """What an engine is tied to (runtimes/device_identity.py writes it beside every engine it builds)."""

    tensorrt: str | None
    gpu: str | None
    l4t: str | None  # the Jetson's L4T release
    machine: str | None  # the CPU architecture

    @classmethod
    def of_engine(cls, meta_path: Path) -> DeviceIdentity:
        """The identity an engine's .json recorded (its other keys, such as build_engine.sh's decision, left)."""
        return from_data(cls, json.loads(meta_path.read_text(encoding="utf-8")), strict=False, source=str(meta_path))


def device_identity(trt_version: str | None = None) -> DeviceIdentity:
    """What an engine is tied to (runtimes/device_identity.py); off a Jetson, the GPU's name from torch."""
    found = DeviceIdentity(**identity(trt_version))
    if found.gpu is None:
        try:
            import torch  # heavy, and only to name a desktop GPU

            found = replace(found, gpu=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
        except Exception:  # noqa: BLE001 - identity is best effort off the device
            pass
    return found


def check_engine_compat(recorded: DeviceIdentity, current: DeviceIdentity, engine: str = "engine") -> None:
    """Refuse an engine built elsewhere: TensorRT version, GPU, L4T release and CPU architecture must match."""
    for key, what in (("tensorrt", "TensorRT"), ("gpu", "GPU"), ("l4t", "L4T release"), ("machine", "CPU architecture")):
        built, here = getattr(recorded, key), getattr(current, key)
        if built is not None and here is not None and str(built) != str(here):
            raise EngineMismatch(
                f"{engine} was built with {what} {_short(built)}, this machine has {_short(here)}",
                "rebuild it on this device: ./build_engine.sh in the bundle, or edgevision build-engine BUNDLE")


def _short(text: Any) -> str:
    text = str(text).splitlines()[0]
    return text if len(text) <= 80 else text[:77] + "..."


def _pin_precisions(trt, network, config, opts: EngineOptions) -> None:
    """trtexec's --layerPrecisions with --precisionConstraints obey (layer_precisions): the parser names layers
    after the ONNX nodes."""
    wanted = {name: {"fp32": trt.float32, "fp16": trt.float16}[p] for name, p in layer_precisions(opts).items()}
    if not wanted:
        return
    config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if layer.name in wanted:
            layer.precision = wanted[layer.name]
            for j in range(layer.num_outputs):
                layer.set_output_type(j, wanted[layer.name])


def build_engine(bundle: Path, opts: EngineOptions, log=lambda msg: None) -> Path:
    """Build the engine with the TensorRT Python API (what build_engine.sh does with trtexec)."""
    trt = import_tensorrt()
    major = int(trt.__version__.split(".")[0])
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(bundle / opts.onnx)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EdgevisionError(f"TensorRT cannot parse {opts.onnx}: {errors[:300]}", "re-export the bundle")
    config = builder.create_builder_config()
    if major == 10:
        if opts.int8:
            config.set_flag(trt.BuilderFlag.INT8)
        if opts.fp16:
            config.set_flag(trt.BuilderFlag.FP16)
            _pin_precisions(trt, network, config, opts)
    if opts.dynamic_batch:
        profile = builder.create_optimization_profile()
        profile.set_shape(opts.input_name, (1, *opts.input_shape), (opts.batch, *opts.input_shape),
                          (opts.max_batch, *opts.input_shape))
        config.add_optimization_profile(profile)
    if opts.dla_core is not None:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = opts.dla_core
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    if opts.workspace_mb:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, opts.workspace_mb << 20)
    cache_path = bundle / opts.timing_cache
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.exists() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    log(f"building {opts.engine} with TensorRT {trt.__version__} (minutes on a Jetson)")
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EdgevisionError("TensorRT failed to build the engine (see the messages above)",
                              "check the TensorRT log; try --precision fp16 to rule out INT8")
    engine_path = bundle / opts.engine
    engine_path.write_bytes(bytes(serialized))
    cache_path.write_bytes(bytes(config.get_timing_cache().serialize()))
    meta = {**to_data(device_identity(trt.__version__)), "built_by": "edgevision build-engine"}
    write_json(engine_path.with_name(engine_path.name + ".json"), meta)
    return engine_path


class TensorRTRunner(Runner):
    """Runs a serialized engine on the GPU (torch tensors as device buffers); refuses foreign engines."""

    runtime = "tensorrt"

    def __init__(self, engine_path: Path):
        trt = import_tensorrt()
        import torch

        engine_path = Path(engine_path)
        meta_path = engine_path.with_name(engine_path.name + ".json")
        if meta_path.exists():
            check_engine_compat(DeviceIdentity.of_engine(meta_path), device_identity(trt.__version__),
                                engine_path.name)
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = runtime.deserialize_cuda_engine(engine_path.read_bytes())
        if self.engine is None:  # TensorRT's own version check failed
            raise EngineMismatch(f"TensorRT {trt.__version__} cannot load {engine_path.name}",
                                 "rebuild it on this device: ./build_engine.sh or edgevision build-engine BUNDLE")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.input_name = next(n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
        self.output_name = next(n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT)
        self.trt, self.torch, self.path = trt, torch, engine_path
        self.stream = torch.cuda.Stream()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        torch = self.torch
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).cuda()
        self.context.set_input_shape(self.input_name, tuple(x.shape))
        out = torch.empty(tuple(self.context.get_tensor_shape(self.output_name)), dtype=torch.float32, device="cuda")
        self.context.set_tensor_address(self.input_name, x.data_ptr())
        self.context.set_tensor_address(self.output_name, out.data_ptr())
        self.context.execute_async_v3(self.stream.cuda_stream)
        self.stream.synchronize()
        return out.cpu().numpy()

    def info(self) -> RunnerInfo:
        return RunnerInfo(self.runtime, self.trt.__version__, device_identity().gpu, artifact=self.path.name)


@register_runner("tensorrt")
def make_tensorrt_runner(engine, **_: Any) -> TensorRTRunner:
    if not isinstance(engine, (str, Path)):
        raise EdgevisionError("TensorRT runs engines, not PyTorch models",
                              "edgevision export --target jetson, build the engine on the device, then pass model.engine")
    return TensorRTRunner(Path(engine))


BUNDLE_SECTION = "tensorrt"  # the jetson bundle's section of manifest.json (pipeline/targets/jetson.py writes it)


def bundle_engine_options(bundle: Path) -> EngineOptions:
    """The engine settings a jetson bundle's manifest.json records."""
    try:
        manifest = json.loads((Path(bundle) / "manifest.json").read_text(encoding="utf-8"))
        return EngineOptions(**manifest[BUNDLE_SECTION]["engine_options"])
    except (OSError, ValueError, KeyError, TypeError):
        raise EdgevisionError(f"{bundle} is not a jetson bundle (manifest.json with tensorrt settings)",
                              "make one with `edgevision export --target jetson`") from None
