"""The gpu profile, checked without a GPU: every chapter runs with the gpu profile's models, ratios and settings on
the CPU, every training loop stopped after a few steps and the data capped to a few batches (COURSEKIT_DRY_RUN,
coursekit.profiles.DRY_RUN_CAPS). It is not the GPU run, and each notebook's environment report says so; it catches
a configuration error (a shape, a ratio that does not divide, a missing CUDA check) before a student's GPU does."""

import json

import nbformat
import pytest

from coursekit.cli import list_notebooks
from coursekit.ledger import read_ledger
from coursekit.profiles import DRY_RUN_CAPS, PROFILES, resolve_profile

NOTEBOOKS = list_notebooks()
STEPS = 2


@pytest.fixture(scope="module")
def dry_run_base(tmp_path_factory):
    """One run dir for the whole course, as `coursekit run` uses: later chapters reuse earlier chapters' models."""
    return tmp_path_factory.mktemp("gpu-dry-run")


def test_dry_run_keeps_the_gpu_profiles_models_and_ratios_and_caps_only_data_and_steps(monkeypatch):
    monkeypatch.setenv("COURSEKIT_DRY_RUN", str(STEPS))
    p = resolve_profile("gpu")
    for key, value in PROFILES["gpu"].items():
        assert p[key] == DRY_RUN_CAPS.get(key, value), key
    assert p.dry_run == {"max_train_steps": STEPS, "caps": DRY_RUN_CAPS}
    monkeypatch.setenv("COURSEKIT_DRY_RUN", "0")
    with pytest.raises(ValueError, match="COURSEKIT_DRY_RUN: '0' is not allowed"):
        resolve_profile("cpu")


@pytest.mark.notebook
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_chapter_runs_with_the_gpu_profiles_configuration(path, dry_run_base, cifar_dir, monkeypatch):
    import papermill as pm

    monkeypatch.setenv("COURSEKIT_PROFILE", "gpu")
    monkeypatch.setenv("COURSEKIT_DRY_RUN", str(STEPS))
    monkeypatch.setenv("COURSEKIT_RUNS_BASE", str(dry_run_base))
    monkeypatch.setenv("COURSEKIT_DATA", cifar_dir)  # the course's data dir (CIFAR-10, SST-2, WikiText-2), as in CI
    out = dry_run_base / path.name
    pm.execute_notebook(str(path), str(out), cwd=str(path.parent), progress_bar=False, execution_timeout=600)
    text = "".join(o.get("text", "") for c in nbformat.read(out, as_version=4).cells if c.cell_type == "code"
                   for o in c.outputs if o.output_type == "stream")
    report = json.loads(text[text.index("{"): text.index("}") + 1])
    assert report["profile"] == "gpu" and report["device"] == "cpu"
    assert report["dry_run"].startswith("NOT a gpu run"), "the report says this is no GPU run"
    records = read_ledger(dry_run_base / "runs" / "latest", notebook=path.stem)
    assert records and all(r["profile"] == "gpu" for r in records)
