"""A stranger's first hour, in CI: a fresh clone of this commit, the README's quick-start commands as written (with
``COURSEKIT_DATA`` relative, as the README shows), the smoke profile, the whole course end to end.

The clone sits beside a ``shared/`` folder (a link to the real ``../shared``), so ``../shared/datasets`` means in it
what the README says. One step differs from a newcomer's machine, and only to save 5 GB and minutes: the clone's
``.venv`` is made beforehand and sees this environment's installed packages through a ``.pth`` file, so ``make``'s
own install step (``pip install -e .[dev]``, the model copies, the kernel) runs for real but finds the dependencies
already there. Everything after that is the README's: ``make course PROFILE=smoke``.
"""

import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"


def _readme_quick_start() -> list[str]:
    """The README's data line and course line, as a newcomer copies them."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    export = next(line.split("#")[0].strip() for line in text.splitlines() if line.startswith("export COURSEKIT_DATA="))
    return [export, "make course PROFILE=smoke"]


@pytest.mark.notebook
@pytest.mark.newcomer
@pytest.mark.skipif(not (SHARED / "datasets" / "cifar10").is_dir(), reason="needs ../shared/datasets")
@pytest.mark.skipif(shutil.which("git") is None or shutil.which("make") is None, reason="needs git and make")
def test_a_fresh_clone_runs_the_readmes_commands_on_the_smoke_profile(tmp_path):
    commands = _readme_quick_start()
    assert commands[0] == "export COURSEKIT_DATA=../shared/datasets", "the README's relative data path"
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
    script = f"cd {clone} && " + " && ".join(commands)
    out = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=1500)
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-4000:]
    assert f"data dir: {work / 'shared' / 'datasets'}" in out.stdout
    assert "plan: 11 notebook(s) x 1 run(s) on the smoke profile" in out.stdout
    runs = [p for p in (clone / "runs").iterdir() if (p / "executed.json").exists()]
    assert len(runs) == 1
    done = sorted(p.stem for p in runs[0].glob("[0-9][0-9]_*.ipynb"))
    assert done == sorted(p.stem for p in (clone / "notebooks").glob("[0-9][0-9]_*.ipynb")), "every chapter ran"
    assert (runs[0] / "summary.md").exists() and "all done in" in out.stdout
