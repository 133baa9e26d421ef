"""A relative data path means what it meant in the user's shell: for the course's own commands (``coursekit run``,
``coursekit lab``: ``make course``, ``make lab``) and for a kernel started elsewhere (papermill with ``--cwd``)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from coursekit.paths import absolute_data_env, default_data_dir, user_path

BIN = Path(sys.executable).parent


def test_user_path_takes_a_relative_path_from_the_shells_folder(tmp_path, monkeypatch):
    shell, elsewhere = tmp_path / "shell", tmp_path / "elsewhere"
    shell.mkdir()
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the process runs in another folder, as a kernel started with --cwd does
    monkeypatch.setenv("PWD", str(shell))
    assert user_path("../data") == tmp_path / "data"
    assert user_path("/abs/x") == Path("/abs/x")
    monkeypatch.setenv("COURSEKIT_DATA", "shared/datasets")
    assert default_data_dir() == shell / "shared" / "datasets"
    assert default_data_dir("mine") == shell / "mine", "an explicit data_dir too"
    monkeypatch.delenv("PWD")
    assert default_data_dir() == elsewhere / "shared" / "datasets", "without $PWD: the working directory"


def test_absolute_data_env_resolves_once_from_where_the_command_starts(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PWD", str(tmp_path))  # as the shell sets it in the folder the command is typed in
    env = absolute_data_env({"COURSEKIT_DATA": "../shared/datasets", "OTHER": "x"})
    assert env == {"COURSEKIT_DATA": str(tmp_path.parent / "shared" / "datasets"), "OTHER": "x"}
    assert absolute_data_env({"OTHER": "x"}) == {"OTHER": "x"}


PROBE = """
import json
from pathlib import Path
from coursekit.ledger import append_record
from coursekit.paths import default_data_dir
Path(run_dir, "seen.json").write_text(json.dumps({"data": str(default_data_dir(data_dir)), "cwd": str(Path.cwd())}))
append_record(run_dir, {"notebook": "00_probe", "stage": "probe", "model": "m", "dataset": "cifar10", "profile": profile,
                        "device": "cpu", "seed": 0, "accuracy": 0.5, "params": 1, "nonzero_params": 1, "macs": 1,
                        "size_bytes": 4, "size_gzip_bytes": 4, "latency_ms": {}, "extra": {}})
"""


def _probe_notebook(folder: Path, kernel: str = "coursekit") -> Path:
    """A chapter-like notebook (NN_name, parameters cell, the course's kernel) that writes the data dir it resolved."""
    folder.mkdir(parents=True)
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('profile = "auto"\ndata_dir = None\nrun_dir = "runs/latest"')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(PROBE)]
    nb.metadata["kernelspec"] = {"name": kernel, "display_name": "k", "language": "python"}
    nbformat.write(nb, folder / "00_probe.ipynb")
    return folder / "00_probe.ipynb"


def _user_shell(tmp_path):
    """The user's folder (where they type), with shared/datasets/ below it, and an env as their shell has it."""
    user = tmp_path / "user"
    (user / "shared" / "datasets").mkdir(parents=True)
    env = {**os.environ, "COURSEKIT_DATA": "shared/datasets", "PWD": str(user)}
    return user, env


@pytest.mark.notebook
def test_coursekit_run_passes_the_absolute_data_dir_to_its_kernels(tmp_path):
    """``make course`` is ``coursekit run``: its kernels start in the notebooks' folder, the data dir stays the user's."""
    user, env = _user_shell(tmp_path)
    book = _probe_notebook(tmp_path / "course")
    out = subprocess.run([str(BIN / "coursekit"), "run", "--notebook-dir", str(book.parent), "--run-dir", "run",
                          "--profile", "smoke"], cwd=user, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    seen = json.loads((user / "run" / "seen.json").read_text())
    assert seen == {"data": str(user / "shared" / "datasets"), "cwd": str(book.parent)}
    assert f"data dir: {user / 'shared' / 'datasets'}" in out.stdout
    assert "kernel: coursekit runs" in out.stdout and "plan: 1 notebook(s)" in out.stdout


@pytest.mark.notebook
def test_papermill_with_cwd_reads_the_data_dir_from_the_users_shell(tmp_path):
    """The README's papermill lines run the kernel in notebooks/ (--cwd); $PWD still names the user's folder."""
    user, env = _user_shell(tmp_path)
    book = _probe_notebook(tmp_path / "course", kernel="python3")
    (user / "run").mkdir()
    out = subprocess.run([str(BIN / "papermill"), str(book), "run/out.ipynb", "-p", "run_dir", str(user / "run"),
                          "--cwd", str(book.parent)], cwd=user, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    seen = json.loads((user / "run" / "seen.json").read_text())
    assert seen == {"data": str(user / "shared" / "datasets"), "cwd": str(book.parent)}


def test_coursekit_lab_opens_the_student_edition_with_the_absolute_data_dir(tmp_path):
    """``make lab`` is ``coursekit lab``: it writes the student edition and starts Lab with $COURSEKIT_DATA absolute."""
    user, env = _user_shell(tmp_path)
    book = _probe_notebook(tmp_path / "course")
    out = subprocess.run([str(BIN / "coursekit"), "lab", "--print-only", "--notebook-dir", str(book.parent),
                          "--out", "student"], cwd=user, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"COURSEKIT_DATA={user / 'shared' / 'datasets'}" in out.stdout
    assert f"--ServerApp.root_dir={user / 'student'}" in out.stdout and (user / "student" / book.name).exists()
    assert "student edition: 00_probe.ipynb: written" in out.stdout
    solutions = subprocess.run([str(BIN / "coursekit"), "lab", "--print-only", "--solutions", "--notebook-dir",
                                str(book.parent)], cwd=user, env=env, capture_output=True, text=True, timeout=120)
    assert f"--ServerApp.root_dir={book.parent}" in solutions.stdout
