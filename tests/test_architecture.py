"""The package's import rules (docs/ARCHITECTURE.md), checked on the source: the core imports no part, Part 1
(images) and Part 2 (text, LLM) do not import each other, only the front doors (session, checks, cli) see both, no
module imports another's private name, and the dry-run switch comes from runsettings, not the profile table."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "coursekit"

CORE = {"paths", "files", "distributed", "runsettings", "validate", "env", "settings", "profiles", "recipe", "train",
        "checkpoints", "metrics",
        "stats", "ledger", "plots", "params", "downloads", "runtimes", "editions"}
PART1 = {"data", "models", "transfer", "distill", "prune", "trim"}
PART2 = {"pretrained", "textdata", "textmodels", "textprune", "layerscores", "sparsity", "llm"}
FRONT = {"session", "checks", "cli", "__main__", "__init__"}
LAYER = {**{m: "core" for m in CORE}, **{m: "part1" for m in PART1}, **{m: "part2" for m in PART2},
         **{m: "front" for m in FRONT}}
# Imports that break the rules today, each with the reason; issue 26 removes them (the test fails when one is gone,
# so this list never claims more than is true).
KNOWN_EXCEPTIONS = {
    ("checkpoints", "models"): "rebuilding a pruned or trimmed ResNet from its checkpoint needs the ResNet anatomy",
    ("settings", "models"): "the typed settings validate model specs against the builders' arguments (lazily)",
    ("distill", "textdata"): "08's text distillation (CachedTeacherLogits, text_kd_loss_fn) still lives in distill",
}


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


def _allowed(src: str, dst: str) -> bool:
    a, b = LAYER[src], LAYER[dst]
    return a == "front" or a == b or b == "core"


@pytest.mark.parametrize("module", _modules())
def test_import_rules(module):
    broken = sorted({dst for dst, _ in _imports(PACKAGE / f"{module}.py")
                     if not _allowed(module, dst) and (module, dst) not in KNOWN_EXCEPTIONS})
    assert not broken, f"{module} ({LAYER[module]}) imports {broken}: see docs/ARCHITECTURE.md's import rules"
    private = sorted({f"{dst}.{n}" for dst, names in _imports(PACKAGE / f"{module}.py") for n in names
                      if n.startswith("_")})
    assert not private, f"{module} imports private names {private}: make them public or keep them where they are"


def test_known_exceptions_are_still_needed():
    for src, dst in KNOWN_EXCEPTIONS:
        assert any(d == dst for d, _ in _imports(PACKAGE / f"{src}.py")), f"{src} -> {dst} is gone: drop the exception"


def test_the_dry_run_switch_comes_from_runsettings():
    for module in ("train", "llm"):
        sources = {dst for dst, _ in _imports(PACKAGE / f"{module}.py")}
        assert "runsettings" in sources and "profiles" not in sources, module
