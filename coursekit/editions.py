"""Lecture and student editions of the notebooks, and their slides.

* Student edition: every cell tagged ``solution`` keeps its function signatures, docstrings and
  the check call, but each function body becomes ``raise NotImplementedError(...)``, so the check
  fails until the student writes it. Outputs of those cells are cleared. ``make lab`` opens it
  (``refresh_student_editions``: written when missing, brought up to date when the student has not changed it,
  never overwritten when they have); ``make lab-solutions`` opens the full notebooks.
* Slides: reveal.js through nbconvert's SlidesExporter, from each cell's
  ``metadata.slideshow.slide_type``; ``slide_types`` gives the default layout (title, section
  headings, figures) to cells that have none.

* Committed notebooks: ``strip_volatile_metadata`` drops what changes on every run without changing what the
  notebook says (papermill's timestamps and durations, input and output paths), so a diff shows only what changed,
  and names the course's kernel (``KERNEL``, the one ``make`` installs), so a student opening a notebook in
  ``make lab`` gets this environment without choosing.

Used by ``coursekit student`` / ``coursekit slides`` / ``coursekit strip`` (``make student`` / ``make slides``).
"""

from __future__ import annotations

import ast
import hashlib
import json
from pathlib import Path

import nbformat

__all__ = ["exercise_stub", "student_edition", "write_student_editions",
           "refresh_student_editions", "slide_types", "build_slides", "KERNEL",
           "strip_volatile_metadata", "strip_notebooks"]

SOLUTION_TAG = "solution"
KERNEL = {"name": "coursekit", "display_name": "Python (coursekit)", "language": "python"}  # see the Makefile


def exercise_stub(source: str) -> str:
    """The student version of a solution cell: each top-level ``def`` keeps its signature and docstring,
    its body becomes ``raise NotImplementedError``; every other statement (the check) stays as it is."""
    tree = ast.parse(source)
    lines = source.splitlines()
    out, last = [], 0
    for node in tree.body:
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        body_start = node.body[0]
        keep_doc = isinstance(body_start, ast.Expr) and isinstance(getattr(body_start, "value", None), ast.Constant) \
            and isinstance(body_start.value.value, str)
        head_end = (body_start.end_lineno if keep_doc else body_start.lineno - 1)
        out += lines[last:head_end]
        indent = " " * (body_start.col_offset)
        out.append(f'{indent}# YOUR CODE HERE (see the exercise text above)')
        out.append(f'{indent}raise NotImplementedError("exercise: write {node.name}")')
        last = node.end_lineno
    out += lines[last:]
    return "\n".join(out)


def student_edition(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A copy of ``nb`` with every ``solution`` cell replaced by its stub (outputs cleared)."""
    nb = nbformat.from_dict(nb)
    for cell in nb.cells:
        if cell.cell_type == "code" and SOLUTION_TAG in cell.metadata.get("tags", []):
            cell.source = exercise_stub(cell.source)
            cell.outputs = []
            cell.execution_count = None
            cell.metadata["tags"] = [t for t in cell.metadata["tags"] if t != SOLUTION_TAG] + ["exercise"]
    return nb


EDITIONS_MANIFEST = ".editions.json"  # in the student folder: {notebook: {"source_sha256", "written_sha256"}}


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _write_edition(src: Path, dst: Path, manifest: dict) -> None:
    nbformat.write(student_edition(nbformat.read(src, as_version=4)), dst)
    manifest[dst.name] = {"source_sha256": _sha256(src), "written_sha256": _sha256(dst)}


def _read_manifest(out_dir: Path) -> dict:
    path = out_dir / EDITIONS_MANIFEST
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def _save_manifest(out_dir: Path, manifest: dict) -> None:
    (out_dir / EDITIONS_MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n", encoding="utf-8")


def write_student_editions(notebooks, out_dir, force: bool = False) -> list[Path]:
    """Write the student edition of each notebook into ``out_dir``. Refuses (ValueError) to overwrite
    files that exist there, which may hold a student's work, unless ``force``."""
    out_dir = Path(out_dir)
    targets = [(Path(nb), out_dir / Path(nb).name) for nb in notebooks]
    existing = [str(t) for _, t in targets if t.exists()]
    if existing and not force:
        raise ValueError(f"student edition: {len(existing)} file(s) exist and may hold your work: {existing[:3]}"
                         f"{' ...' if len(existing) > 3 else ''}; move them away or pass --force to overwrite")
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = _read_manifest(out_dir)
    for src, dst in targets:
        _write_edition(src, dst, manifest)
    _save_manifest(out_dir, manifest)
    return [t for _, t in targets]


def refresh_student_editions(notebooks, out_dir) -> list[tuple[Path, str]]:
    """Bring ``out_dir``'s student edition up to date without touching a student's work: a missing notebook is
    written; one the student has not changed since it was written (its bytes as recorded in ``.editions.json``) is
    rewritten when its chapter changed; one the student has changed is kept as it is, and said to be behind its
    chapter when it is. Returns [(student notebook, what happened)]: "written", "updated", "up to date",
    "yours, kept", "yours, kept; the chapter changed since (make student FORCE=1 replaces it)"."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = _read_manifest(out_dir)
    done = []
    for src in map(Path, notebooks):
        dst = out_dir / src.name
        entry = manifest.get(dst.name)
        if not dst.exists():
            _write_edition(src, dst, manifest)
            done.append((dst, "written"))
            continue
        untouched = entry is not None and _sha256(dst) == entry["written_sha256"]
        current = entry is not None and _sha256(src) == entry["source_sha256"]
        if untouched and not current:
            _write_edition(src, dst, manifest)
            done.append((dst, "updated"))
        elif untouched:
            done.append((dst, "up to date"))
        else:
            behind = entry is None or not current
            done.append((dst, "yours, kept" + ("; the chapter changed since (make student FORCE=1 replaces it)"
                                                if behind else "")))
    _save_manifest(out_dir, manifest)
    return done


def slide_types(nb: nbformat.NotebookNode, overwrite: bool = False) -> nbformat.NotebookNode:
    """Give each cell a ``slideshow.slide_type`` (in place) when it has none: the title and every "## " section
    start a slide, "### " a sub-slide, code cells with a figure a sub-slide, the parameters cell and the
    exercise solutions are skipped, everything else continues the current slide."""
    for i, cell in enumerate(nb.cells):
        if "slideshow" in cell.metadata and not overwrite:
            continue
        tags = cell.metadata.get("tags", [])
        first = cell.source.lstrip().split("\n", 1)[0]
        if cell.cell_type == "markdown":
            kind = "slide" if (i == 0 or first.startswith("## ") or first.startswith("# ")) else \
                "subslide" if first.startswith("### ") else "-"
        elif "parameters" in tags or SOLUTION_TAG in tags:
            kind = "skip"
        elif any("image/png" in o.get("data", {}) for o in cell.get("outputs", [])):
            kind = "subslide"
        else:
            kind = "-"
        cell.metadata["slideshow"] = {"slide_type": kind}
    return nb


def build_slides(notebooks, out_dir) -> list[Path]:
    """reveal.js slides (``<stem>.slides.html``) of each notebook, built with nbconvert's SlidesExporter from
    the cells' slide metadata (defaults from ``slide_types`` where a cell has none)."""
    from nbconvert import SlidesExporter

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    exporter = SlidesExporter()
    written = []
    for path in notebooks:
        nb = slide_types(nbformat.read(path, as_version=4))
        body, _ = exporter.from_notebook_node(nb)
        dst = out_dir / f"{Path(path).stem}.slides.html"
        dst.write_text(body, encoding="utf-8")
        written.append(dst)
    return written


def strip_volatile_metadata(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """In place: remove papermill's per-run metadata (notebook and cells: timestamps, durations, paths; the
    ``parameters`` it injected and the ``status`` of each cell are kept out too) and set the kernelspec to ``KERNEL``.
    Outputs, execution counts and tags stay. Returns ``nb``."""
    nb.metadata.pop("papermill", None)
    nb.metadata["kernelspec"] = dict(KERNEL)
    for cell in nb.cells:
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)
    return nb


def strip_notebooks(paths) -> list[Path]:
    """Strip every notebook in ``paths`` in place (``strip_volatile_metadata``); returns the paths changed."""
    changed = []
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        before = nbformat.writes(nb)
        if nbformat.writes(strip_volatile_metadata(nb)) != before:
            nbformat.write(nb, path)
            changed.append(Path(path))
    return changed
