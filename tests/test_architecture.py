"""The package's import rules (docs/ARCHITECTURE.md), checked on the source: the core imports no part, Part 1
(images) and Part 2 (text, LLM) do not import each other, only the front doors (session, checks, cli) see both, no
module imports another's private name, and the dry-run switch comes from runsettings, not the profile table."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "coursekit"

CORE = {"paths", "files", "distributed", "runsettings", "validate", "env", "settings", "profiles", "recipe", "train",
        "modelcache", "kdloss", "metrics", "recorder", "hints", "stats", "ledger", "plots", "params", "downloads", "runtimes",
        "editions", "quantize", "codebook", "weightquant", "gptq", "convquant", "quantchecks", "lora", "inference", "onnxexport",
        "gguffile", "llamacpp", "deploychecks", "surgery", "batching"}
PART1 = {"data", "models", "checkpoints", "transfer", "distill", "prune", "trim", "imagework", "imagechecks"}
PART2 = {"pretrained", "textdata", "textmodels", "textdistill", "textprune", "layerscores", "sparsity", "llm",
         "llmwidth", "textwork", "textchecks", "textbaseline"}
PART3 = {"audio", "kws", "speechwork", "speechchecks"}  # the speech capstone (13); it borrows Part 1's tools in the notebook
FRONT = {"session", "checks", "cli", "__main__", "__init__"}
LAYER = {**{m: "core" for m in CORE}, **{m: "part1" for m in PART1}, **{m: "part2" for m in PART2},
         **{m: "part3" for m in PART3}, **{m: "front" for m in FRONT}}


def _imports(path: Path):
    """(module imported, names imported) for every relative import of ``path``, lazy ones included."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                yield node.module.split(".")[0], [a.name for a in node.names]
            else:
                for a in node.names:
                    yield a.name, []


def _modules():
    return sorted(p.stem for p in PACKAGE.glob("*.py"))


def test_every_module_has_a_layer():
    assert sorted(LAYER) == _modules(), "a new module: add it to one layer here and to docs/ARCHITECTURE.md"
    doc = (PACKAGE.parent / "docs" / "ARCHITECTURE.md").read_text()
    layers = doc[doc.index("## Layers"):doc.index("Why flat modules")]
    missing = [m for m in _modules() if m not in ("__init__", "__main__") and f"`{m}`" not in layers]
    assert not missing, f"docs/ARCHITECTURE.md's layer table does not name {missing}"


def _allowed(src: str, dst: str) -> bool:
    a, b = LAYER[src], LAYER[dst]
    return a == "front" or a == b or b == "core"


@pytest.mark.parametrize("module", _modules())
def test_import_rules(module):
    broken = sorted({dst for dst, _ in _imports(PACKAGE / f"{module}.py")
                     if not _allowed(module, dst)})
    assert not broken, f"{module} ({LAYER[module]}) imports {broken}: see docs/ARCHITECTURE.md's import rules"
    private = sorted({f"{dst}.{n}" for dst, names in _imports(PACKAGE / f"{module}.py") for n in names
                      if n.startswith("_") and not (n.startswith("__") and n.endswith("__"))})  # dunders are public
    assert not private, f"{module} imports private names {private}: make them public or keep them where they are"


def test_the_dry_run_switch_comes_from_runsettings():
    for module in ("train", "llm"):
        sources = {dst for dst, _ in _imports(PACKAGE / f"{module}.py")}
        assert "runsettings" in sources and "profiles" not in sources, module


MAX_MODULE_LINES, MAX_CLASS_LINES = 520, 200  # one idea per module: a module past these is two ideas


@pytest.mark.parametrize("module", _modules())
def test_modules_and_classes_stay_small(module):
    source = (PACKAGE / f"{module}.py").read_text()
    assert len(source.splitlines()) <= MAX_MODULE_LINES, f"{module}.py: split it (docs/ARCHITECTURE.md)"
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef):
            length = node.end_lineno - node.lineno + 1
            assert length <= MAX_CLASS_LINES, f"{module}.{node.name} is {length} lines"


def test_session_is_a_thin_front_door():
    """The Session resolves and hands out the parts' helpers; no recipe, training call or record loop lives in it."""
    tree = ast.parse((PACKAGE / "session.py").read_text())
    session = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Session")
    methods = {n.name for n in session.body if isinstance(n, ast.FunctionDef)}
    assert methods == {"recorder", "images", "text", "speech"}, methods
    called = {n.func.attr if isinstance(n.func, ast.Attribute) else getattr(n.func, "id", "")
              for n in ast.walk(session) if isinstance(n, ast.Call)}
    assert not called & {"fit", "record_models", "model_record", "append_record", "latency_medians"}, called
