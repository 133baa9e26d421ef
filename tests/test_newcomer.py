"""A stranger's first hour, in CI: a fresh clone of this commit, the README's quick-start commands as written (with
``COURSEKIT_DATA`` relative, as the README shows: ``make course``), the whole course end to end, on the configuration
of a stranger with a GPU: ``COURSEKIT_PROFILE=gpu`` (what "auto" resolves to where CUDA is) and
``COURSEKIT_DRY_RUN=2`` (every training loop stopped after 2 steps, the data capped; ``coursekit.profiles``).

One run, two checks: the README's commands work from a fresh clone, and every chapter runs with the gpu profile's
models, ratios and settings, in one run dir as ``make course`` shares it (later chapters reuse earlier chapters'
models). It is not the GPU run, and each notebook's environment report says so; it catches a configuration error (a
shape, a ratio that does not divide, a missing CUDA check) before a student's GPU does. The smoke profile runs every
chapter elsewhere (tests/test_notebooks.py and the Makefile's nbval list).

The clone sits beside a ``shared/`` folder (a link to the real ``../shared``), so ``../shared/datasets`` means in it
what the README says. One step differs from a newcomer's machine, and only to save 5 GB and minutes: the clone's
``.venv`` is made beforehand and sees this environment's installed packages through a ``.pth`` file, so ``make``'s
own install step (``pip install -e .[dev]``, the model copies, the kernel) runs for real but finds the dependencies
already there. Everything after that is the README's: ``make course``.
"""

import json
import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from coursekit.ledger import read_ledger

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
DRY_RUN_STEPS = 2


def _readme_quick_start() -> list[str]:
    """The README's data line and course line, as a newcomer copies them."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    export = next(line.split("#")[0].strip() for line in text.splitlines() if line.startswith("export COURSEKIT_DATA="))
    course = next(line.split("#")[0].strip() for line in text.splitlines() if line.startswith("make course"))
    return [export, course]


@pytest.mark.notebook
@pytest.mark.newcomer
@pytest.mark.skipif(not (SHARED / "datasets" / "cifar10").is_dir(), reason="needs ../shared/datasets")
@pytest.mark.skipif(shutil.which("git") is None or shutil.which("make") is None, reason="needs git and make")
def test_a_fresh_clone_runs_the_readmes_commands_with_the_gpu_profiles_configuration(tmp_path):
    commands = _readme_quick_start()
    assert commands == ["export COURSEKIT_DATA=../shared/datasets", "make course"], "the README's quick start"
    work = tmp_path / "work"
    work.mkdir()
    (work / "shared").symlink_to(SHARED)
    clone = work / "course"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True, timeout=120)
    subprocess.run([sys.executable, "-m", "venv", str(clone / ".venv")], check=True, timeout=120)
    pth = next((clone / ".venv" / "lib").glob("python*/site-packages"))
    (pth / "_this_environment.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COURSEKIT_", "VIRTUAL_ENV", "PYTHON"))}
    env["COURSEKIT_CACHE"] = os.environ["COURSEKIT_CACHE"]  # the tests' cache: decoded data, not the commands under test
    env["PWD"] = str(clone)
    env.update(COURSEKIT_PROFILE="gpu", COURSEKIT_DRY_RUN=str(DRY_RUN_STEPS))  # "auto" on a machine with CUDA
    script = f"cd {clone} && " + " && ".join(commands)
    out = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=1500)
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-4000:]
    assert f"data dir: {work / 'shared' / 'datasets'}" in out.stdout
    books = sorted(p.stem for p in (clone / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert f"plan: {len(books)} notebook(s) x 1 run(s) on the gpu profile" in out.stdout
    runs = [p for p in (clone / "runs").iterdir() if (p / "executed.json").exists()]
    assert len(runs) == 1
    done = sorted(p.stem for p in runs[0].glob("[0-9][0-9]_*.ipynb"))
    assert done == books, "every chapter ran"
    assert (runs[0] / "summary.md").exists() and "all done in" in out.stdout
    records = read_ledger(runs[0])
    for stem in books:
        text = "".join(o.get("text", "") for c in nbformat.read(runs[0] / f"{stem}.ipynb", as_version=4).cells
                       if c.cell_type == "code" for o in c.outputs if o.output_type == "stream")
        report = json.loads(text[text.index("{"): text.index("}") + 1])
        assert report["profile"] == "gpu" and report["device"] == "cpu", stem
        assert report["dry_run"].startswith("NOT a gpu run"), f"{stem}: the report says this is no GPU run"
        mine = [r for r in records if r["notebook"] == stem]
        assert mine and all(r["profile"] == "gpu" for r in mine), stem
