"""Command line: the course from one command.

``coursekit run`` executes the notebooks in order with papermill into one run dir (executed
notebooks, ledger, figures, summary.md), so later chapters reuse the models of earlier ones;
``--sweep name=v1,v2`` makes one run per value, ``--shard i/n`` splits those runs across machines,
``--resume`` skips notebooks already executed successfully with the same parameters.
``coursekit report RUN_DIR`` prints the summary table and writes the Pareto plots.
``coursekit student`` / ``coursekit slides`` write the student edition and the reveal.js slides.
``coursekit lab`` opens JupyterLab on the student edition (``--solutions``: the full notebooks); ``coursekit kernel``
registers the notebooks' kernel for this interpreter (``run`` and ``lab`` do it on first use).

Also ``python -m coursekit ...``. ``make course`` / ``make student`` / ``make slides`` call it.
Everything the user typed is checked before the first notebook starts.
"""

from __future__ import annotations

import argparse
import ast
import datetime as dt
import hashlib
import json
import os
import sys
import time
from pathlib import Path

from .editions import KERNEL
from .ledger import ledger_table, read_ledger
from .paths import REPO_ROOT, absolute_data_env, default_data_dir, user_path
from .profiles import GPU_PROFILE_NOTE, profile_name
from .runtimes import clock as _clock
from .runtimes import plan_message

__all__ = ["main", "list_notebooks", "parse_param", "parse_sweep", "parse_shard", "shard_from_scheduler", "plan_jobs",
           "read_run_ledgers"]

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
MANIFEST = "executed.json"  # per run dir: notebook stem -> {"params", "source_sha256", "seconds"} of successful runs


def list_notebooks(directory: Path = NOTEBOOK_DIR) -> list[Path]:
    """The chapter notebooks (``NN_name.ipynb``) in course order."""
    return sorted(p for p in directory.glob("[0-9][0-9]_*.ipynb"))


def _literal(raw: str):
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return raw


def parse_param(text: str) -> tuple[str, object]:
    """``name=value`` -> (name, value), the value read as a Python literal when it is one, else a string
    (as papermill's ``-p`` does: ``seed=1`` is an int, ``profile=cpu`` a string, ``x=None`` is None)."""
    if "=" not in text or not text.split("=", 1)[0].isidentifier():
        raise ValueError(f"-p: malformed parameter {text!r}; expected name=value, e.g. -p seed=1")
    name, raw = text.split("=", 1)
    return name, _literal(raw)


def parse_sweep(text: str) -> tuple[str, list]:
    """``name=v1,v2,...`` -> (name, [v1, v2, ...]), each value typed like ``parse_param``'s."""
    if "=" not in text or not text.split("=", 1)[0].isidentifier():
        raise ValueError(f"--sweep: malformed {text!r}; expected name=v1,v2,..., e.g. --sweep temperature=2,4,8")
    name, raw = text.split("=", 1)
    values = [_literal(v.strip()) for v in raw.split(",")]
    if not raw.strip() or any(v == "" for v in values):
        raise ValueError(f"--sweep: {text!r} has an empty value; expected name=v1,v2,...")
    if len({repr(v) for v in values}) != len(values):
        raise ValueError(f"--sweep: {text!r} repeats a value")
    return name, values


def parse_shard(text: str | None) -> tuple[int, int]:
    """``i/n`` -> (i, n) with 0 <= i < n: this machine runs the jobs whose index j has j % n == i."""
    if text is None:
        return 0, 1
    try:
        i, n = (int(part) for part in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard: malformed {text!r}; expected i/n with 0 <= i < n, e.g. --shard 0/2") from None
    if not 0 <= i < n:
        raise ValueError(f"--shard: {text!r} is not allowed; need 0 <= i < n, e.g. 0/2 and 1/2")
    return i, n


def shard_from_scheduler(environ=None) -> tuple[tuple[int, int], str] | None:
    """The shard of this task of a job array, from the scheduler's environment: ((i, n), where), or None outside an
    array. SLURM: SLURM_ARRAY_TASK_ID, SLURM_ARRAY_TASK_COUNT (and SLURM_ARRAY_TASK_MIN, so --array=1-3 works);
    Grid Engine: SGE_TASK_ID, SGE_TASK_FIRST, SGE_TASK_LAST, SGE_TASK_STEPSIZE."""
    env = os.environ if environ is None else environ
    try:
        if env.get("SLURM_ARRAY_TASK_COUNT"):
            step = int(env.get("SLURM_ARRAY_TASK_STEP") or 1)
            i = (int(env["SLURM_ARRAY_TASK_ID"]) - int(env.get("SLURM_ARRAY_TASK_MIN") or 0)) // step
            found = (i, int(env["SLURM_ARRAY_TASK_COUNT"])), "SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT"
        elif env.get("SGE_TASK_ID") and env.get("SGE_TASK_ID") != "undefined":
            first, last = int(env["SGE_TASK_FIRST"]), int(env["SGE_TASK_LAST"])
            step = int(env.get("SGE_TASK_STEPSIZE") or 1)
            found = ((int(env["SGE_TASK_ID"]) - first) // step, (last - first) // step + 1), "SGE_TASK_ID"
        else:
            return None
    except (KeyError, ValueError) as err:
        raise ValueError(f"--shard: the job array's environment is incomplete or malformed ({err}); "
                         "give --shard i/n explicitly") from None
    (i, n), where = found
    if not 0 <= i < n:
        raise ValueError(f"--shard: the job array's environment gives task {i} of {n} ({where}); give --shard i/n")
    return (i, n), where


def plan_jobs(run_dir: Path, params: dict, sweep: tuple[str, list] | None, shard: tuple[int, int]) -> list[tuple[Path, dict]]:
    """The runs to do on this machine: [(run dir, parameters)]. Without a sweep one run in ``run_dir``;
    with one, a run per value in ``run_dir/<name>=<value>``, and only those of this shard."""
    if sweep is None:
        jobs = [(run_dir, dict(params))]
    else:
        name, values = sweep
        jobs = [(run_dir / f"{name}={v}", {**params, name: v}) for v in values]
    i, n = shard
    return [job for j, job in enumerate(jobs) if j % n == i]


def _select(only: list[str] | None, directory: Path = NOTEBOOK_DIR) -> list[Path]:
    books = list_notebooks(Path(directory))
    if not books:
        raise ValueError(f"--notebook-dir: no NN_name.ipynb notebooks in {directory}")
    if not only:
        return books
    chosen = []
    for name in only:
        match = [b for b in books if b.stem == name or b.stem.startswith(name + "_") or b.name == name]
        if not match:
            raise ValueError(f"--only: unknown notebook {name!r}; allowed: {', '.join(b.stem for b in books)}")
        chosen += [m for m in match if m not in chosen]
    return [b for b in books if b in chosen]


def _validate_params(books: list[Path], names) -> None:
    """Every name must be a parameter of every selected notebook (papermill's notebook inspection)."""
    import papermill as pm

    for book in books:
        known = pm.inspect_notebook(str(book))
        unknown = [k for k in names if k not in known]
        if unknown:
            raise ValueError(f"-p/--sweep: notebook {book.stem} has no parameter(s) {unknown}; it takes: {', '.join(known)}")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _manifest(run_dir: Path) -> dict:
    path = run_dir / MANIFEST
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def _remember(run_dir: Path, book: Path, params: dict, seconds: float) -> None:
    done = _manifest(run_dir)
    done[book.stem] = {"params": params, "source_sha256": _sha256(book), "seconds": round(seconds, 1)}
    tmp = run_dir / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(done, indent=1, sort_keys=True, default=str), encoding="utf-8")
    tmp.replace(run_dir / MANIFEST)


def _already_done(run_dir: Path, book: Path, params: dict) -> bool:
    entry = _manifest(run_dir).get(book.stem)
    return bool(entry) and entry["params"] == json.loads(json.dumps(params, default=str)) \
        and entry["source_sha256"] == _sha256(book) and (run_dir / book.name).exists()


KERNEL_NAME = KERNEL["name"]  # the kernel every chapter names


def _kernel_of(book: Path) -> str | None:
    return json.loads(book.read_text(encoding="utf-8")).get("metadata", {}).get("kernelspec", {}).get("name")


def ensure_kernel(name: str = KERNEL_NAME, prefix: str | None = None) -> str:
    """The Jupyter kernel ``name`` that the notebooks name, registered for this interpreter (in its environment,
    ``prefix``, default ``sys.prefix``) when no kernel of that name exists, as ``make`` does; when that cannot be
    written, this interpreter's own "python3" kernel. Prints which kernel runs which Python. Returns the kernel name
    to use."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        python = KernelSpecManager().get_kernel_spec(name).argv[0]
    except NoSuchKernel:
        from ipykernel.kernelspec import install

        try:
            install(kernel_name=name, display_name=KERNEL["display_name"], prefix=prefix or sys.prefix)
        except OSError as err:  # a read-only environment: run with this interpreter's own kernel
            print(f"kernel {name!r} not found and not registered ({err}); using this interpreter's kernel 'python3' "
                  f"({sys.executable})", flush=True)
            return "python3"
        print(f"registered the Jupyter kernel {name!r} for {sys.executable} (in {prefix or sys.prefix})", flush=True)
        python = sys.executable
    same = Path(python).resolve() == Path(sys.executable).resolve()
    print(f"kernel: {name} runs {python}" + ("" if same else f" (not this interpreter, {sys.executable})"), flush=True)
    return name


def _run_one(books: list[Path], run_dir: Path, params: dict, *, resume: bool, kernel: str | None, label: str) -> bool:
    """Execute ``books`` in order into ``run_dir``. Returns False (after printing where) on the first failure."""
    import papermill as pm

    run_dir.mkdir(parents=True, exist_ok=True)
    params = {**params, "run_dir": str(run_dir)}
    print(f"{label}run dir: {run_dir}", flush=True)
    start = time.perf_counter()
    for k, book in enumerate(books, 1):
        head = f"{label}[{k}/{len(books)} {book.stem}, {_clock(time.perf_counter() - start)} elapsed]"
        if resume and _already_done(run_dir, book, params):
            print(f"{head} skipped: already executed successfully with the same parameters", flush=True)
            continue
        out = run_dir / book.name
        t0 = time.perf_counter()
        print(f"{head} running ...", flush=True)
        try:
            pm.execute_notebook(str(book), str(out), parameters=params, cwd=str(book.parent),
                                progress_bar=sys.stderr.isatty(), kernel_name=kernel)
        except pm.PapermillExecutionError as err:
            first_line = next((ln for ln in err.source.splitlines() if ln.strip() and not ln.startswith("#")), "")
            print(f"{head} FAILED after {time.perf_counter() - t0:.0f} s in cell {err.cell_index} "
                  f"(execution {err.exec_count}: {first_line.strip()[:80]!r})\n  {err.ename}: {err.evalue}\n"
                  f"  partial output notebook kept at {out}", file=sys.stderr, flush=True)
            return False
        seconds = time.perf_counter() - t0
        _remember(run_dir, book, params, seconds)
        print(f"{head} done in {seconds:.0f} s -> {out}", flush=True)
    return True


def cmd_run(args) -> int:
    books = _select(args.only, args.notebook_dir)
    params = dict(parse_param(p) for p in args.param)
    if args.profile:
        params["profile"] = args.profile
    if "run_dir" in params:
        raise ValueError("-p run_dir: use --run-dir instead")
    sweep = parse_sweep(args.sweep) if args.sweep else None
    if sweep and sweep[0] in params:
        raise ValueError(f"--sweep {sweep[0]}: the same parameter is also given with -p")
    shard = parse_shard(args.shard)
    if args.shard is None and sweep is not None:
        from_array = shard_from_scheduler()
        if from_array is not None:
            shard, where = from_array
            args.shard = f"{shard[0]}/{shard[1]}"
            print(f"shard {args.shard} taken from the job array ({where})")
    _validate_params(books, list(params) + ([sweep[0]] if sweep else []))
    if args.resume and not args.run_dir:
        raise ValueError("--resume needs --run-dir (the run to resume)")
    profile = profile_name(str(params.get("profile", "auto")))  # ValueError for an unknown profile, before any work
    os.environ.update(absolute_data_env())  # a relative COURSEKIT_DATA means what it meant in the user's shell
    if isinstance(params.get("data_dir"), str):
        params["data_dir"] = str(user_path(params["data_dir"]))
    print(f"data dir: {default_data_dir(params.get('data_dir'))}")
    run_dir = Path(args.run_dir) if args.run_dir else REPO_ROOT / "runs" / dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = run_dir.resolve()
    jobs = plan_jobs(run_dir, params, sweep, shard)
    if not jobs:
        print(f"shard {args.shard}: no run falls to this shard")
        return 0
    print(plan_message(profile, [b.stem for b in books], runs=len(jobs)), flush=True)
    if profile == "gpu" and params.get("profile", "auto") == "auto":
        print(f"profile 'auto' chose gpu (CUDA is available): {GPU_PROFILE_NOTE}", flush=True)
    if args.kernel is None and any(_kernel_of(b) == KERNEL_NAME for b in books):
        chosen = ensure_kernel()  # registered on first use, as make does; "python3" where it cannot be
        args.kernel = None if chosen == KERNEL_NAME else chosen
    t0 = time.perf_counter()
    for j, (job_dir, job_params) in enumerate(jobs, 1):
        label = f"(run {j}/{len(jobs)} {job_dir.name}) " if sweep else ""
        if not _run_one(books, job_dir, job_params, resume=args.resume, kernel=args.kernel, label=label):
            return 1
    print(f"all done in {time.perf_counter() - t0:.0f} s")
    return cmd_report(argparse.Namespace(run_dir=str(run_dir), plots=True))


def read_run_ledgers(run_dir: Path) -> list[dict]:
    """The newest records of ``run_dir``'s ledger and of every sweep run below it; records of a
    sweep run carry a "run" key with its folder name (e.g. "temperature=8")."""
    records = read_ledger(run_dir, latest=True)
    for sub in sorted(p for p in run_dir.iterdir() if (p / "ledger.jsonl").exists()) if run_dir.is_dir() else []:
        records += [{**r, "run": sub.name} for r in read_ledger(sub, latest=True)]
    return records


def cmd_report(args) -> int:
    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise ValueError(f"report: {run_dir} is not a folder")
    records = read_run_ledgers(run_dir)
    if not records:
        print(f"no ledger records in {run_dir / 'ledger.jsonl'} or its sweep runs", file=sys.stderr)
        return 1
    table = ledger_table(records)
    written = []
    if getattr(args, "plots", True):
        import re

        import matplotlib.pyplot as plt

        from .plots import group_by_task, pareto_plots

        for key, group in group_by_task(records).items():  # one front per task: accuracies of different tasks differ
            per = "sequence" if group[0].get("task") else "image"
            fig = pareto_plots(group, per=per)
            fig.suptitle(f"task: {key}", fontsize=10)
            fig.tight_layout()
            written.append(run_dir / f"pareto_{re.sub(r'[^A-Za-z0-9_.-]+', '_', key).strip('_')}.png")
            fig.savefig(written[-1], dpi=110)
            plt.close(fig)
    (run_dir / "summary.md").write_text(f"# Run {run_dir.name}\n\n{table}\n" +
                                        "".join(f"\n![Pareto plots, {p.stem}]({p.name})\n" for p in written), encoding="utf-8")
    print(table)
    print(f"\nsummary: {run_dir / 'summary.md'}" + "".join(f"\nplots: {p}" for p in written))
    return 0


def cmd_student(args) -> int:
    from .editions import write_student_editions

    books = _select(args.only, args.notebook_dir)
    for path in write_student_editions(books, Path(args.out), force=args.force):
        print(f"student edition: {path}")
    return 0


def cmd_lab(args) -> int:
    """JupyterLab on the student edition (refreshed first, a student's edits kept) or, with --solutions, on the full
    notebooks; $COURSEKIT_DATA made absolute first, the course's kernel registered when missing."""
    if args.solutions:
        root = Path(args.notebook_dir)
        print(f"instructor edition (solutions and the outputs of a real run): {root}")
    else:
        from .editions import refresh_student_editions

        root = Path(args.out)
        for path, what in refresh_student_editions(_select(None, args.notebook_dir), root):
            print(f"student edition: {path.name}: {what}")
        print(f"student edition (exercises to solve; make lab-solutions opens the full notebooks): {root}")
    env = absolute_data_env()
    if env.get("COURSEKIT_DATA"):
        print(f"COURSEKIT_DATA={env['COURSEKIT_DATA']}")
    if ensure_kernel() != KERNEL_NAME:
        print(f"the notebooks name the kernel {KERNEL_NAME!r}: choose 'Python 3' in Lab's kernel menu", flush=True)
    extra = args.jupyter_args[1:] if args.jupyter_args[:1] == ["--"] else args.jupyter_args
    command = [sys.executable, "-m", "jupyter", "lab", f"--ServerApp.root_dir={root.resolve()}", *extra]
    print(" ".join(command), flush=True)
    if args.print_only:
        return 0
    os.execvpe(command[0], command, env)  # replaces this process: Lab's own Ctrl-C handling, its exit status


def cmd_kernel(args) -> int:
    ensure_kernel()
    return 0


def cmd_slides(args) -> int:
    from .editions import build_slides

    for path in build_slides(_select(args.only, args.notebook_dir), Path(args.out)):
        print(f"slides: {path}")
    return 0


def cmd_strip(args) -> int:
    from .editions import strip_notebooks

    changed = strip_notebooks(_select(args.only, args.notebook_dir))
    for path in changed:
        print(f"stripped: {path}")
    print(f"{len(changed)} notebook(s) changed")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="coursekit", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="execute the notebooks with papermill into one run dir")
    run.add_argument("--profile", choices=["smoke", "cpu", "gpu", "auto"], help="profile passed to every notebook")
    run.add_argument("--only", nargs="+", metavar="NOTEBOOK", help="notebook stems or prefixes, e.g. 00 or 00_baseline")
    run.add_argument("-p", "--param", action="append", default=[], metavar="NAME=VALUE", help="a notebook parameter")
    run.add_argument("--sweep", metavar="NAME=V1,V2,...", help="one run per value, in RUN_DIR/NAME=VALUE, side by side in the summary")
    run.add_argument("--run-dir", help="default: runs/<timestamp>")
    run.add_argument("--resume", action="store_true", help="skip notebooks already executed successfully with the same parameters")
    run.add_argument("--shard", metavar="I/N", help="run only the sweep runs j with j %% N == I (0 <= I < N); "
                     "default inside a SLURM or Grid Engine job array: this task's index and the array's size")
    run.add_argument("--kernel", default=None, help="Jupyter kernel (default: the notebook's, in this environment)")
    run.set_defaults(func=cmd_run)
    rep = sub.add_parser("report", help="print the summary table of a run dir's ledger and write the Pareto plots")
    rep.add_argument("run_dir")
    rep.add_argument("--no-plots", dest="plots", action="store_false")
    rep.set_defaults(func=cmd_report)
    stu = sub.add_parser("student", help="write the student edition (solutions replaced by stubs)")
    stu.add_argument("--out", default=str(REPO_ROOT / "student"))
    stu.add_argument("--only", nargs="+", metavar="NOTEBOOK")
    stu.add_argument("--force", action="store_true", help="overwrite existing student notebooks")
    stu.set_defaults(func=cmd_student)
    sli = sub.add_parser("slides", help="build reveal.js slides of the notebooks")
    sli.add_argument("--out", default=str(REPO_ROOT / "slides"))
    sli.add_argument("--only", nargs="+", metavar="NOTEBOOK")
    sli.set_defaults(func=cmd_slides)
    stp = sub.add_parser("strip", help="remove per-run metadata from the committed notebooks and name the course's kernel")
    stp.add_argument("--only", nargs="+", metavar="NOTEBOOK")
    stp.set_defaults(func=cmd_strip)
    lab = sub.add_parser("lab", help="JupyterLab on the student edition (or --solutions: the full notebooks)")
    lab.add_argument("--solutions", action="store_true", help="open the full notebooks (instructor edition)")
    lab.add_argument("--out", default=str(REPO_ROOT / "student"), help="the student edition's folder")
    lab.add_argument("--print-only", action="store_true", help="prepare and print the command; do not start Lab")
    lab.add_argument("jupyter_args", nargs=argparse.REMAINDER, help="passed on to jupyter lab (after --)")
    lab.set_defaults(func=cmd_lab)
    ker = sub.add_parser("kernel", help="register the notebooks' Jupyter kernel ('coursekit') for this interpreter")
    ker.set_defaults(func=cmd_kernel)
    for p in (run, stu, sli, stp, lab):
        p.add_argument("--notebook-dir", default=str(NOTEBOOK_DIR), help="where the NN_name.ipynb notebooks are")
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ValueError as err:
        print(f"coursekit: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
