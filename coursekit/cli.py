"""Command line: ``coursekit run`` executes the notebooks with papermill into one run
dir; ``coursekit report RUN_DIR`` prints the ledger's summary table.

Also ``python -m coursekit ...``. ``make course`` calls ``coursekit run``.
"""

from __future__ import annotations

import argparse
import ast
import datetime as dt
import sys
import time
from pathlib import Path

from .ledger import ledger_table, read_ledger
from .session import REPO_ROOT

__all__ = ["main", "list_notebooks", "parse_param"]

NOTEBOOK_DIR = REPO_ROOT / "notebooks"


def list_notebooks(directory: Path = NOTEBOOK_DIR) -> list[Path]:
    """The chapter notebooks (``NN_name.ipynb``) in course order."""
    return sorted(p for p in directory.glob("[0-9][0-9]_*.ipynb"))


def parse_param(text: str) -> tuple[str, object]:
    """``name=value`` -> (name, value), the value read as a Python literal when it is one, else a string."""
    if "=" not in text or not text.split("=", 1)[0].isidentifier():
        raise ValueError(f"-p: malformed parameter {text!r}; expected name=value, e.g. -p seed=1")
    name, raw = text.split("=", 1)
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        value = raw
    return name, value


def _select(only: list[str] | None) -> list[Path]:
    books = list_notebooks()
    if not only:
        return books
    chosen = []
    for name in only:
        match = [b for b in books if b.stem == name or b.stem.startswith(name + "_") or b.name == name]
        if not match:
            raise ValueError(f"--only: unknown notebook {name!r}; allowed: {', '.join(b.stem for b in books)}")
        chosen += [m for m in match if m not in chosen]
    return [b for b in books if b in chosen]


def _check_params(books: list[Path], params: dict) -> None:
    import papermill as pm

    for book in books:
        known = pm.inspect_notebook(str(book))
        unknown = [k for k in params if k not in known]
        if unknown:
            raise ValueError(f"-p: notebook {book.stem} has no parameter(s) {unknown}; it takes: {', '.join(known)}")


def cmd_run(args) -> int:
    import papermill as pm

    books = _select(args.only)
    params = dict(parse_param(p) for p in args.param)
    if args.profile:
        params["profile"] = args.profile
    _check_params(books, params)
    run_dir = Path(args.run_dir) if args.run_dir else REPO_ROOT / "runs" / dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = run_dir.resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    params["run_dir"] = str(run_dir)
    print(f"run dir: {run_dir}")
    for book in books:
        out = run_dir / book.name
        t0 = time.perf_counter()
        print(f"[{book.stem}] running ...", flush=True)
        try:
            pm.execute_notebook(str(book), str(out), parameters=params, cwd=str(book.parent), progress_bar=False,
                                kernel_name=args.kernel)
        except pm.PapermillExecutionError as err:
            print(f"[{book.stem}] FAILED in cell {err.exec_count} after {time.perf_counter() - t0:.0f} s: "
                  f"{err.ename}: {err.evalue}\n  partial output kept at {out}", file=sys.stderr)
            return 1
        print(f"[{book.stem}] done in {time.perf_counter() - t0:.0f} s -> {out}", flush=True)
    return cmd_report(argparse.Namespace(run_dir=str(run_dir)))


def cmd_report(args) -> int:
    run_dir = Path(args.run_dir)
    records = read_ledger(run_dir, latest=True)
    if not records:
        print(f"no ledger records in {run_dir / 'ledger.jsonl'}", file=sys.stderr)
        return 1
    table = ledger_table(records)
    (run_dir / "summary.md").write_text(f"# Run {run_dir.name}\n\n{table}\n", encoding="utf-8")
    print(table)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="coursekit", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="execute the notebooks with papermill into one run dir")
    run.add_argument("--profile", choices=["smoke", "cpu", "gpu", "auto"], help="profile passed to every notebook")
    run.add_argument("--only", nargs="+", metavar="NOTEBOOK", help="notebook stems or prefixes, e.g. 00 or 00_baseline")
    run.add_argument("-p", "--param", action="append", default=[], metavar="NAME=VALUE", help="a notebook parameter")
    run.add_argument("--run-dir", help="default: runs/<timestamp>")
    run.add_argument("--kernel", default=None, help="Jupyter kernel (default: the notebook's, in this environment)")
    run.set_defaults(func=cmd_run)
    rep = sub.add_parser("report", help="print the summary table of a run dir's ledger")
    rep.add_argument("run_dir")
    rep.set_defaults(func=cmd_report)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ValueError as err:
        print(f"coursekit: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
