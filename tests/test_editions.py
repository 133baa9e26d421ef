"""Student edition and slides: the exercise checks fail on the stubs and pass on the solutions."""

import ast

import nbformat
import numpy as np
import pytest
import torch

from coursekit import checks
from coursekit.cli import list_notebooks, main
from coursekit.editions import SOLUTION_TAG, exercise_stub, student_edition

NOTEBOOKS = list_notebooks()


def _namespace(path):
    """What the exercise cells see in the notebook: the names its cells import (import statements only,
    no session, no data)."""
    ns = {"torch": torch, "nn": torch.nn, "F": torch.nn.functional, "np": np, "checks": checks}
    for cell in nbformat.read(path, as_version=4).cells:
        if cell.cell_type == "code":
            tree = ast.parse(cell.source)
            tree.body = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
            exec(compile(tree, f"{path.stem}-imports", "exec"), ns)
    return ns


def _exercise(source):
    """An exercise cell reduced to its function definitions and its check calls: other lines may use the
    notebook's trained models, which a unit test does not have."""
    tree = ast.parse(source)
    tree.body = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.Import, ast.ImportFrom))
                 or ("checks.check_" in ast.unparse(n) and not _is_target(ast.unparse(n)))]
    return compile(tree, "exercise", "exec")


TARGET_CHECKS = ("checks.check_target(", "checks.check_bit_plan(", "checks.check_pruning_plan(", "checks.check_fastest_path(",
                 "checks.check_speech_design(", "checks.check_llm_plan(",
                 "checks.check_lora_plan(")


def _is_target(source: str) -> bool:
    """A numeric-target exercise (``checks.check_target``, 11's ``checks.check_bit_plan``, 09's
    ``checks.check_pruning_plan``, 12's ``checks.check_fastest_path`` on the chapter's measured table) judges a model
    the chapter trains: the notebook tests run it (smoke profile), a unit test cannot."""
    return any(check in source for check in TARGET_CHECKS)


def _solution_cells(path):
    return [c for c in nbformat.read(path, as_version=4).cells if SOLUTION_TAG in c.metadata.get("tags", [])]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_chapter_has_exercises_whose_checks_pass_on_the_solutions(path):
    cells = _solution_cells(path)
    if path.stem != "06_pipeline":
        assert len(cells) >= 3, f"{path.name}: at least three exercises"
    ns = _namespace(path)  # one namespace per notebook: a later exercise may use an earlier one's function
    for cell in cells:
        assert "checks.check_" in cell.source, "each exercise calls its coursekit.checks function"
        exec(_exercise(cell.source), ns)  # raises if a check fails


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_checks_fail_on_the_student_stubs(path):
    student = student_edition(nbformat.read(path, as_version=4))
    stubs = [c for c in student.cells if "exercise" in c.metadata.get("tags", [])]
    assert len(stubs) == len(_solution_cells(path))
    assert not any(SOLUTION_TAG in c.metadata.get("tags", []) for c in student.cells), "no solution left"
    ns = _namespace(path)
    for cell in stubs:
        assert not cell.outputs and "YOUR CODE HERE" in cell.source
        if _is_target(cell.source):  # the cell calls the student's functions before its check: each must refuse
            exec(_exercise(cell.source), ns)
            for node in ast.parse(cell.source).body:
                if isinstance(node, ast.FunctionDef):
                    with pytest.raises(NotImplementedError):
                        ns[node.name](*[None] * len(node.args.args))
            continue
        with pytest.raises((NotImplementedError, AssertionError)):
            exec(_exercise(cell.source), ns)


@pytest.mark.parametrize("path", [p for p in NOTEBOOKS if int(p.stem[:2]) <= 6], ids=lambda p: p.stem)
def test_every_part1_chapter_has_a_numeric_target_exercise(path):
    """MIT-lab style: at least one exercise per chapter is judged on a model the student trains (size and accuracy)."""
    assert any(_is_target(c.source) for c in _solution_cells(path)), f"{path.name}: no checks.check_target exercise"


def test_stub_keeps_signature_docstring_and_check():
    src = 'def f(x, y=2):\n    """Add."""\n    z = x + y\n    return z\n\n\nchecks.check_f(f)\n'
    stub = exercise_stub(src)
    assert 'def f(x, y=2):\n    """Add."""\n    # YOUR CODE HERE' in stub and "return z" not in stub
    assert stub.rstrip().endswith("checks.check_f(f)")


def test_student_command_refuses_to_overwrite_a_students_work(tmp_path, capsys):
    out = tmp_path / "student"
    assert main(["student", "--out", str(out), "--only", "00"]) == 0
    (out / "00_baseline.ipynb").write_text("my work")
    assert main(["student", "--out", str(out), "--only", "00"]) == 2
    assert "may hold your work" in capsys.readouterr().err
    assert (out / "00_baseline.ipynb").read_text() == "my work"
    assert main(["student", "--out", str(out), "--only", "00", "--force"]) == 0
    assert nbformat.read(out / "00_baseline.ipynb", as_version=4).cells


def test_slides_build(tmp_path):
    assert main(["slides", "--out", str(tmp_path), "--only", "02"]) == 0
    html = (tmp_path / "02_knowledge_distillation.slides.html").read_text()
    assert "reveal" in html.lower() and "<section" in html


def test_strip_volatile_metadata_keeps_outputs_and_names_the_kernel():
    import nbformat

    from coursekit.editions import KERNEL, strip_volatile_metadata

    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("print(1)", execution_count=1,
                                     outputs=[nbformat.v4.new_output("stream", text="1\n")])
    cell.metadata["papermill"] = {"duration": 0.1, "start_time": "2026-01-01"}
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell]
    nb.metadata["papermill"] = {"duration": 3.0}
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    strip_volatile_metadata(nb)
    assert "papermill" not in nb.metadata and "papermill" not in nb.cells[0].metadata
    assert nb.metadata["kernelspec"] == KERNEL and nb.cells[0].metadata["tags"] == ["parameters"]
    assert nb.cells[0].outputs[0]["text"] == "1\n" and nb.cells[0].execution_count == 1


KEEP_NAMES = {"torch", "nn", "F", "np", "math", "len", "range", "sum", "min", "max", "abs", "round", "sorted", "zip",
              "True", "False", "None", "and", "or", "not", "in", "is", "if", "else", "for", "lambda"}


def _normalised(code: str) -> str:
    """``code`` with every variable name replaced by ``_`` and spaces dropped (attributes, calls of torch / nn / F and
    builtins kept): ``conv.weight.abs()`` and ``block.conv1.weight.abs()`` both contain ``_.weight.abs()``."""
    import io
    import tokenize

    out, prev = [], None
    try:
        for tok in tokenize.generate_tokens(io.StringIO(code).readline):
            if tok.type == tokenize.NAME and tok.string not in KEEP_NAMES and prev != ".":
                out.append("_")
            elif tok.type in (tokenize.NAME, tokenize.OP, tokenize.NUMBER, tokenize.STRING):
                out.append(tok.string)
            prev = tok.string
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return code.replace(" ", "")
    return "".join(out)


def _solution_lines(source: str) -> list[str]:
    """The statements inside the defs of a solution cell, normalised (``_normalised``), that carry an answer: at least
    15 characters once normalised, and not a block opener such as ``with torch.no_grad():``."""
    import ast

    lines, out = source.splitlines(), []
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef):
            for stmt in node.body:
                if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
                    continue  # the docstring stays in the student edition on purpose
                for line in lines[stmt.lineno - 1: stmt.end_lineno]:
                    line = line.split("#")[0].strip().removeprefix("return ").strip()
                    if line.endswith(":"):
                        continue
                    norm = _normalised(line)
                    norm = norm[1:] if norm.startswith("_.") else norm  # x.weight... also matches a.b.weight...
                    if len(norm) >= 15:
                        out.append(norm)
    return out


@pytest.mark.parametrize("path", list_notebooks(), ids=lambda p: p.stem)
def test_no_solution_text_survives_in_the_student_edition(path):
    """No line of an exercise's solution appears anywhere in the student edition, even with its variables renamed:
    not in the stub, and not in a worked example elsewhere in the chapter that would give the answer away."""
    nb = nbformat.read(path, as_version=4)
    solutions = [c.source for c in nb.cells if "solution" in c.metadata.get("tags", [])]
    assert solutions, "every chapter has exercises"
    student = student_edition(nb)
    texts = ["\n".join(_normalised(line) for line in c.source.splitlines()) for c in student.cells]
    leaks = [(line, i) for sol in solutions for line in _solution_lines(sol) for i, t in enumerate(texts) if line in t]
    assert not leaks, f"solution text in the student edition (normalised line, cell): {leaks}"


def test_the_leak_test_sees_through_renamed_variables():
    sol = "def l1(conv, bn):\n    return conv.weight.detach().abs().flatten(1).sum(1)\n"
    shown = _normalised("scores = block.conv1.weight.detach().abs().flatten(1).sum(1)  # L1 per filter")
    assert any(line in shown for line in _solution_lines(sol))
    assert not any(line in _normalised("scores = ckp.l1_filter_importance(block.conv1, block.bn1)") for line in _solution_lines(sol))


def _hint_texts() -> list[str]:
    """Every string that ``coursekit.checks`` can print (its string constants and the literal parts of its f-strings),
    each normalised like a solution line."""
    import inspect

    tree = ast.parse(inspect.getsource(checks))
    texts = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
    return [_normalised(t) for t in texts]


@pytest.mark.parametrize("path", list_notebooks(), ids=lambda p: p.stem)
def test_no_hint_prints_a_line_of_a_reference_solution(path):
    """A wrong answer gets hints in steps (what to think about, then the formula), never the code: no line of an
    exercise's reference solution appears in any text the checks print, even with its variables renamed."""
    solutions = [c.source for c in _solution_cells(path)]
    hints = _hint_texts()
    leaks = sorted({line for sol in solutions for line in _solution_lines(sol) for h in hints if line in h})
    assert not leaks, f"{path.stem}: solution lines in the checks' hints (normalised): {leaks}"


def test_refresh_writes_updates_and_never_touches_a_students_edited_copy(tmp_path):
    """``make lab``: a missing student notebook is written, an untouched one follows its chapter, an edited one is
    the student's and stays as it is (said to be behind when its chapter changed)."""
    from coursekit.editions import refresh_student_editions

    src = tmp_path / "notebooks"
    src.mkdir()
    for stem in ("00_a", "01_b"):
        nb = nbformat.v4.new_notebook()
        cell = nbformat.v4.new_code_cell("def f(x):\n    return x + 1\n\nchecks.check_f(f)")
        cell.metadata["tags"] = [SOLUTION_TAG]
        nb.cells = [nbformat.v4.new_markdown_cell(f"# {stem}"), cell]
        nbformat.write(nb, src / f"{stem}.ipynb")
    books, out = sorted(src.glob("*.ipynb")), tmp_path / "student"

    def status():
        return {p.name: what for p, what in refresh_student_editions(books, out)}

    assert status() == {"00_a.ipynb": "written", "01_b.ipynb": "written"}
    assert "return x + 1" not in (out / "00_a.ipynb").read_text()
    assert status() == {"00_a.ipynb": "up to date", "01_b.ipynb": "up to date"}
    mine = nbformat.read(out / "01_b.ipynb", as_version=4)
    mine.cells[1].source = mine.cells[1].source.replace('raise NotImplementedError("exercise: write f")', "return x + 1")
    nbformat.write(mine, out / "01_b.ipynb")
    edited = (out / "01_b.ipynb").read_bytes()
    assert status()["01_b.ipynb"] == "yours, kept"
    for book in books:  # both chapters change
        nb = nbformat.read(book, as_version=4)
        nb.cells[0].source += "\n\nA new paragraph."
        nbformat.write(nb, book)
    now = status()
    assert now["00_a.ipynb"] == "updated" and "A new paragraph" in (out / "00_a.ipynb").read_text()
    assert now["01_b.ipynb"].startswith("yours, kept; the chapter changed since")
    assert (out / "01_b.ipynb").read_bytes() == edited, "a student's work is theirs"
