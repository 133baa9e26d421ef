import re

import pytest

from coursekit import cli


def test_parse_param_reads_literals_like_papermill():
    assert cli.parse_param("seed=3") == ("seed", 3)
    assert cli.parse_param("temperature=2.5") == ("temperature", 2.5)
    assert cli.parse_param("profile=smoke") == ("profile", "smoke")
    assert cli.parse_param("data_dir=None") == ("data_dir", None)
    assert cli.parse_param("classes=['cat', 'dog']") == ("classes", ["cat", "dog"])
    for bad in ("seed", "=3", "2x=1"):
        with pytest.raises(ValueError, match="malformed parameter"):
            cli.parse_param(bad)


def test_unknown_notebook_and_parameter_are_refused_before_running(capsys):
    assert cli.main(["run", "--only", "99_nothing"]) == 2
    assert "unknown notebook '99_nothing'" in capsys.readouterr().err
    assert cli.main(["run", "--only", "00", "-p", "not_a_param=1"]) == 2
    assert "has no parameter(s) ['not_a_param']" in capsys.readouterr().err


def test_report_on_empty_run_dir(tmp_path, capsys):
    assert cli.main(["report", str(tmp_path)]) == 1
    assert "no ledger records" in capsys.readouterr().err


def test_notebooks_are_listed_in_course_order():
    names = [p.stem for p in cli.list_notebooks()]
    assert names == sorted(names) and names[0] == "00_baseline"


# ----------------------------------------------------------------------------- the runner end to end, on tiny notebooks
# Each tiny notebook takes the common parameters, appends one ledger record per run (through coursekit's
# ledger, no training) and counts its executions in the run dir, so the test can see what ran.

import json  # noqa: E402

import nbformat  # noqa: E402

from coursekit.ledger import read_ledger  # noqa: E402

TINY_BODY = """
from pathlib import Path
from coursekit.ledger import append_record
rd = Path(run_dir)
count = rd / "{stem}.count"
count.write_text(str(int(count.read_text()) + 1 if count.exists() else 1))
{fail}
append_record(rd, {{"notebook": "{stem}", "stage": "tiny", "model": "m", "dataset": dataset, "profile": profile,
                   "device": "cpu", "seed": seed, "accuracy": 0.5 + 0.01 * temperature, "params": 10, "nonzero_params": 10,
                   "macs": int(100 * temperature), "size_bytes": 40, "size_gzip_bytes": 30,
                   "latency_ms": {{"cpu_b64": 1.0 * temperature}},
                   "extra": {{}}}})
"""


def _tiny_course(tmp_path, fail_in=None):
    d = tmp_path / "notebooks"
    d.mkdir()
    for stem in ("00_first", "01_second"):
        nb = nbformat.v4.new_notebook()
        params = nbformat.v4.new_code_cell('profile = "auto"\nseed = 0\ndata_dir = None\nrun_dir = "runs/latest"\n'
                                           'dataset = "cifar10"\ntemperature = 4.0')
        params.metadata["tags"] = ["parameters"]
        fail = 'raise RuntimeError("broken on purpose")' if stem == fail_in else ""
        nb.cells = [nbformat.v4.new_markdown_cell(f"# {stem}"), params,
                    nbformat.v4.new_code_cell(TINY_BODY.format(stem=stem, fail=fail))]
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(nb, d / f"{stem}.ipynb")
    return d


def _count(run_dir, stem):
    p = run_dir / f"{stem}.count"
    return int(p.read_text()) if p.exists() else 0


@pytest.mark.notebook
def test_runner_sweep_resume_and_report(tmp_path, capsys):
    books, run = _tiny_course(tmp_path), tmp_path / "run"
    args = ["run", "--notebook-dir", str(books), "--profile", "smoke", "-p", "seed=3", "--sweep", "temperature=2,8",
            "--run-dir", str(run)]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert re.search(r"\(run 1/2 temperature=2\) \[1/2 00_first, \d+ s elapsed\] done", out)
    assert re.search(r"\(run 2/2 temperature=8\) \[2/2 01_second, \d+ s elapsed\] done", out)
    for value in (2, 8):
        sub = run / f"temperature={value}"
        recs = read_ledger(sub)
        assert {r["notebook"] for r in recs} == {"00_first", "01_second"}
        assert all(r["macs"] == 100 * value and r["seed"] == 3 and r["profile"] == "smoke" for r in recs)
        assert (sub / "00_first.ipynb").exists() and _count(sub, "00_first") == 1
    summary = (run / "summary.md").read_text()
    assert "| run |" in summary and "temperature=2" in summary and "temperature=8" in summary
    assert (run / "pareto_cifar10.png").stat().st_size > 1000 and "pareto_cifar10.png" in summary

    # resume: the finished notebooks are skipped; a changed parameter runs again
    assert cli.main(args + ["--resume"]) == 0
    assert "skipped: already executed successfully" in capsys.readouterr().out
    assert _count(run / "temperature=2", "00_first") == 1
    assert cli.main(["run", "--notebook-dir", str(books), "--profile", "smoke", "-p", "seed=4", "--only", "00",
                     "--run-dir", str(run / "temperature=2"), "-p", "temperature=2", "--resume"]) == 0
    assert _count(run / "temperature=2", "00_first") == 2


@pytest.mark.notebook
def test_runner_shards_split_a_sweep(tmp_path, capsys):
    books, run = _tiny_course(tmp_path), tmp_path / "run"
    base = ["run", "--notebook-dir", str(books), "--only", "00", "--profile", "smoke", "--sweep", "seed=1,2,3",
            "--run-dir", str(run)]
    assert cli.main(base + ["--shard", "1/2"]) == 0
    assert sorted(p.name for p in run.iterdir() if p.is_dir()) == ["seed=2"]
    assert cli.main(base + ["--shard", "0/2"]) == 0
    assert sorted(p.name for p in run.iterdir() if p.is_dir()) == ["seed=1", "seed=2", "seed=3"]


@pytest.mark.notebook
def test_runner_reports_the_failing_notebook_and_cell_and_keeps_the_output(tmp_path, capsys):
    books, run = _tiny_course(tmp_path, fail_in="01_second"), tmp_path / "run"
    assert cli.main(["run", "--notebook-dir", str(books), "--profile", "smoke", "--run-dir", str(run)]) == 1
    err = capsys.readouterr().err
    assert re.search(r"\[2/2 01_second, \d+ s elapsed\] FAILED", err)
    assert "in cell 3" in err and "RuntimeError: broken on purpose" in err
    assert (run / "01_second.ipynb").exists(), "partial output kept for inspection"
    assert json.loads((run / cli.MANIFEST).read_text()).keys() == {"00_first"}, "only the successful notebook is recorded"


@pytest.mark.parametrize("args,message", [
    (["--sweep", "temperature"], "--sweep: malformed"),
    (["--sweep", "temperature=1,,2"], "empty value"),
    (["--sweep", "nope=1,2"], "has no parameter(s) ['nope']"),
    (["--shard", "2/2"], "--shard: '2/2' is not allowed"),
    (["--shard", "a/b"], "--shard: malformed"),
    (["-p", "seed"], "-p: malformed parameter"),
    (["-p", "run_dir=x"], "use --run-dir"),
    (["--resume"], "--resume needs --run-dir"),
])
def test_bad_runner_arguments_are_refused_before_anything_runs(tmp_path, capsys, args, message):
    books = _tiny_course(tmp_path)
    assert cli.main(["run", "--notebook-dir", str(books), "--run-dir", str(tmp_path / "run"), *args]
                    if "--resume" not in args else ["run", "--notebook-dir", str(books), *args]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_one_pareto_front_per_task():
    from coursekit.plots import group_by_task

    recs = [{"dataset": "cifar10", "accuracy": 0.7, "extra": {}},
            {"dataset": "cifar10", "accuracy": 0.9, "extra": {"target_classes": ["dog", "ship"]}},
            {"dataset": "sst2", "task": "sst2", "accuracy": 0.87, "extra": {}},
            {"dataset": "wikitext2", "task": "wikitext2", "accuracy": None, "perplexity": 36.2, "extra": {}}]
    groups = group_by_task(recs)
    assert list(groups) == ["cifar10", "cifar10[dog,ship]", "sst2"]
    assert all(len(g) == 1 for g in groups.values())


def test_pareto_front_keeps_only_undominated_points():
    from coursekit.plots import pareto_front

    pts = [(10, 0.9), (5, 0.8), (6, 0.7), (1, 0.5), (5, 0.85)]
    assert pareto_front(pts) == [3, 4, 0]


def test_shard_from_a_slurm_or_grid_engine_array():
    assert cli.shard_from_scheduler({}) is None
    assert cli.shard_from_scheduler({"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_COUNT": "3"})[0] == (2, 3)
    # sbatch --array=1-3: ids 1..3, min 1
    assert cli.shard_from_scheduler({"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "3",
                                     "SLURM_ARRAY_TASK_MIN": "1"})[0] == (0, 3)
    # qsub -t 1-5:2 (tasks 1, 3, 5)
    assert cli.shard_from_scheduler({"SGE_TASK_ID": "5", "SGE_TASK_FIRST": "1", "SGE_TASK_LAST": "5",
                                     "SGE_TASK_STEPSIZE": "2"})[0] == (2, 3)
    assert cli.shard_from_scheduler({"SGE_TASK_ID": "undefined"}) is None
    with pytest.raises(ValueError, match="--shard"):
        cli.shard_from_scheduler({"SLURM_ARRAY_TASK_ID": "x", "SLURM_ARRAY_TASK_COUNT": "3"})
    with pytest.raises(ValueError, match="task 4 of 3"):
        cli.shard_from_scheduler({"SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_COUNT": "3"})


@pytest.mark.notebook
def test_a_three_task_slurm_array_runs_one_sweep_value_each_and_merges(tmp_path, capsys, monkeypatch):
    books, run = _tiny_course(tmp_path), tmp_path / "run"
    args = ["run", "--notebook-dir", str(books), "--profile", "smoke", "--sweep", "temperature=2,4,8",
            "--run-dir", str(run)]
    for task in range(3):  # what sbatch --array=0-2 would start, one after the other here
        monkeypatch.setenv("SLURM_ARRAY_TASK_ID", str(task))
        monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "3")
        assert cli.main(args) == 0
        out = capsys.readouterr().out
        assert f"shard {task}/3 taken from the job array" in out
        done = {p.name for p in run.iterdir() if (p / "ledger.jsonl").exists()}
        assert len(done) == task + 1, "each task ran exactly one sweep value"
    monkeypatch.delenv("SLURM_ARRAY_TASK_ID")
    monkeypatch.delenv("SLURM_ARRAY_TASK_COUNT")
    assert cli.main(["report", str(run)]) == 0
    summary = (run / "summary.md").read_text()
    assert all(f"temperature={v}" in summary for v in (2, 4, 8)), "the merged summary holds all three runs"


def test_pareto_plots_draws_the_costs_asked_for():
    from coursekit.plots import pareto_plots

    recs = [{"notebook": "09", "model": m, "accuracy": a, "params": p, "macs": 10 * p, "size_gzip_bytes": 4 * p,
             "latency_ms": {"cpu_b32_s64": p / 10}} for m, a, p in (("big", 0.87, 100), ("small", 0.84, 40))]
    fig = pareto_plots(recs, costs=("params", "latency"))
    assert [ax.get_xlabel() for ax in fig.axes] == ["parameters", "CPU latency b32_s64 (ms)"]
    with pytest.raises(ValueError, match="costs"):
        pareto_plots(recs, costs=("flops",))


def test_the_notebooks_kernel_is_registered_on_first_use(tmp_path, monkeypatch, capsys):
    """``coursekit run`` outside ``make`` (pip install -e ., conda): the kernel the notebooks name is registered for
    this interpreter when absent, then found."""
    import sys

    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "share" / "jupyter"))
    name = "coursekit-test-kernel"
    assert cli.ensure_kernel(name, prefix=str(tmp_path)) == name
    assert f"registered the Jupyter kernel {name!r} for {sys.executable}" in capsys.readouterr().out
    spec = json.loads((tmp_path / "share" / "jupyter" / "kernels" / name / "kernel.json").read_text())
    assert spec["argv"][0] == sys.executable
    assert cli.ensure_kernel(name, prefix=str(tmp_path)) == name
    assert capsys.readouterr().out.strip() == f"kernel: {name} runs {sys.executable}"


def test_the_plan_states_the_measured_time_or_that_there_is_none():
    from coursekit.runtimes import MEASURED, clock, plan_message

    cpu = plan_message("cpu", ["00_baseline", "01_transfer_learning"])
    assert f"about {clock(MEASURED['cpu']['seconds']['00_baseline'] + MEASURED['cpu']['seconds']['01_transfer_learning'])}" in cpu
    assert "not timed" in plan_message("cpu", ["00_baseline", "99_new"])
    assert "no measured time for this profile yet" in plan_message("gpu", ["00_baseline"])
    assert clock(3725) == "1 h 02 min" and clock(307) == "5 min 07 s" and clock(42) == "42 s"
