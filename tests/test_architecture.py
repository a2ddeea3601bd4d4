"""The code's shape, checked: short functions, dispatch only in registries, thin commands, lazy imports only
for heavy libraries. (The layers themselves are checked by import-linter in .ci/run, from pyproject.toml.)"""
import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "edgevision"
MAX_FUNCTION_LINES = 80
# Libraries heavy enough (or optional enough) to be imported inside the function that needs them, so that
# `edgevision --help` and the registries load without them.
HEAVY = {"torch", "timm", "torchvision", "openvino", "nncf", "onnx", "onnxruntime", "torch_pruning",
         "tensorrt", "matplotlib", "rich", "safetensors", "huggingface_hub", "skimage", "sklearn", "selenium",
         "adjustText", "transformers", "modelopt"}
# The modules that are registries: the only places that may dispatch on a target, runtime or family name.
REGISTRIES = {"pipeline/targets/registry.py", "runtimes/__init__.py", "compression/prune.py", "models/zoo.py",
              "models/weights.py", "data/builtin.py"}


def modules():
    return sorted(PACKAGE.rglob("*.py"))


def functions(tree):
    return [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_function_is_longer_than_a_screen(path):
    tree = ast.parse(path.read_text())
    long = [f"{f.name} ({f.end_lineno - f.lineno + 1} lines)" for f in functions(tree)
            if f.end_lineno - f.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long, long


def test_dispatch_on_names_happens_only_in_registries():
    pattern = re.compile(r"\b(target|runtime|family)\s*==")
    found = [f"{p.relative_to(PACKAGE)}:{i}" for p in modules() if str(p.relative_to(PACKAGE)) not in REGISTRIES
             for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert not found, found


def _registered_names() -> set[str]:
    from edgevision.models.zoo import FAMILIES
    from edgevision.pipeline.targets import TARGETS
    from edgevision.runtimes import RUNTIMES

    return set(TARGETS) | set(RUNTIMES) | set(FAMILIES)


def _string_constants(node) -> list[str]:
    items = node.elts if isinstance(node, (ast.Tuple, ast.List, ast.Set)) else [node]
    return [n.value for n in items if isinstance(n, ast.Constant) and isinstance(n.value, str)]


def test_no_comparison_with_a_literal_target_runtime_or_family_outside_the_registries():
    """`x == "jetson"`, `runtime in ("openvino", ...)`, `family != "vit"`: a name compared by hand is a branch the
    registry does not know about. (deploy/ runs on the device without edgevision's registries.)"""
    names, found = _registered_names(), []
    for path in modules():
        where = str(path.relative_to(PACKAGE))
        if where in REGISTRIES or where.startswith("deploy/"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare):
                literals = [s for side in (node.left, *node.comparators) for s in _string_constants(side)]
                found += [f"{where}:{node.lineno} {s!r}" for s in literals if s in names]
    assert not found, found


def test_every_family_table_is_keyed_by_the_zoo_families():
    from edgevision.compression.prune import PRUNING_FAMILIES
    from edgevision.models.zoo import FAMILIES
    from edgevision.pipeline.presets import FAMILY_PRESETS

    assert set(FAMILY_PRESETS) == set(FAMILIES)  # every family has its INT8 settings, named alike
    assert set(PRUNING_FAMILIES) < set(FAMILIES)  # pruning covers some of them, named alike


def test_no_precision_is_guessed_from_a_variant_name():
    """A variant's precision is a field of its record (pipeline/report.py), never its name's prefix."""
    found = [f"{p.relative_to(PACKAGE)}:{i}" for p in modules() if p.name != "report.py"
             for i, line in enumerate(p.read_text().splitlines(), 1) if 'startswith("int8")' in line]
    assert not found, found


def test_commands_do_not_import_torch():
    for path in (PACKAGE / "cli").glob("*.py"):
        tree = ast.parse(path.read_text())
        names = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                 for alias in node.names}
        names |= {node.module.split(".")[0] for node in ast.walk(tree)
                  if isinstance(node, ast.ImportFrom) and node.module}
        assert "torch" not in names, path.name


def _function_level_imports(tree):
    for func in functions(tree):
        for node in ast.walk(func):
            if isinstance(node, ast.Import):
                yield func.name, [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                yield func.name, [node.module]


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_function_level_imports_are_heavy_libraries_only(path):
    """Everything of edgevision's own is imported at the top of a module, so cycles cannot hide."""
    tree = ast.parse(path.read_text())
    light = [f"{func}: {name}" for func, names in _function_level_imports(tree) for name in names
             if name.split(".")[0] not in HEAVY and name.split(".")[0] not in ("importlib", "tempfile", "logging")]
    assert not light, light


def test_the_package_has_no_import_cycle():
    """No module reaches itself through the imports of another (import-linter's graph, grimp)."""
    grimp = pytest.importorskip("grimp", reason="grimp comes with import-linter (the test extra)")
    graph = grimp.build_graph("edgevision")
    cycles = sorted(f"{importer} -> {imported}" for importer in graph.modules
                    for imported in graph.find_modules_directly_imported_by(importer)
                    if graph.find_shortest_chain(importer=imported, imported=importer))
    assert not cycles, cycles


def test_the_public_names_shadow_no_module_of_the_package():
    """`edgevision.compress` is a function: a subpackage of that name would be unreachable by attribute
    (`import edgevision.compress.x as y` fails), so none may share a public name."""
    import pkgutil

    import edgevision

    modules = {m.name for m in pkgutil.iter_modules(edgevision.__path__)}
    assert not modules & set(edgevision.__all__), modules & set(edgevision.__all__)
