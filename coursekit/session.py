"""The setup every notebook does first, and its front door to the helpers of each part.

``start_session`` resolves the profile, seeds everything, picks the device, resolves the data and run dirs and
prints the environment report. The ``Session`` it returns holds what was resolved and hands out the helpers bound to
it: ``S.images`` (Part 1, ``coursekit.imagework``), ``S.text`` (Part 2, ``coursekit.textwork``), ``S.speech``
(Part 3, ``coursekit.speechwork``) and ``S.recorder``
(latency measurements and ledger records, ``coursekit.recorder``). No recipe and no record loop lives here.
Introduced in notebooks/00_baseline.ipynb.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import torch

from . import data as _data
from .env import environment_report, pick_device, seed_everything
from .imagework import ImageWork
from .models import check_spec
from .paths import REPO_ROOT, default_data_dir
from .profiles import GPU_PROFILE_NOTE, Profile, resolve_profile
from .recorder import Recorder
from .speechwork import SpeechWork
from .textwork import TextWork

__all__ = ["Session", "start_session", "resolve_run_dir", "TEXT_DATASETS", "SPEECH_DATASETS"]

TEXT_DATASETS = ("sst2", "trec", "wikitext2")
SPEECH_DATASETS = ("fsdd",)
TARGETS_SET_ON = ("cifar10",)  # the data the numeric-target exercises' targets were set on (checks.check_target)


def resolve_run_dir(run_dir: str | os.PathLike) -> Path:
    """Where a run's files go. A relative ``run_dir`` is taken from $COURSEKIT_RUNS_BASE when set
    (the tests point it at a temporary folder), else from the repository root, so that a
    notebook opened in notebooks/ and one run by the CLI share ``runs/``."""
    p = Path(run_dir).expanduser()
    if p.is_absolute():
        return p
    env = os.environ.get("COURSEKIT_RUNS_BASE")
    if env:
        return Path(env).expanduser() / p
    base = REPO_ROOT if (REPO_ROOT / "pyproject.toml").exists() else Path.cwd()
    return base / p


@dataclass
class Session:
    """What a notebook resolved at setup: ``notebook`` stem, ``profile``, ``seed``, ``device``,
    ``dataset``, ``data_dir``, ``run_dir`` (created) and the ``report`` dict; ``images``, ``text`` and ``recorder``
    are the helpers bound to them."""

    notebook: str
    profile: Profile
    seed: int
    device: torch.device
    dataset: str
    data_dir: str | None
    run_dir: Path
    report: dict = field(default_factory=dict)

    @cached_property
    def recorder(self) -> Recorder:
        """Latency measurements and ledger records of this chapter (``coursekit.recorder.Recorder``)."""
        return Recorder(self.notebook, self.profile, self.device, self.seed, self.dataset, self.run_dir)

    @cached_property
    def images(self) -> ImageWork:
        """Part 1's helpers (``coursekit.imagework.ImageWork``): data, batches, recipe, cached models, records."""
        return ImageWork(self.recorder, self.data_dir)

    @cached_property
    def text(self) -> TextWork:
        """Part 2's helpers (``coursekit.textwork.TextWork``): text data, batches, recipe, teacher, records."""
        return TextWork(self.recorder, self.data_dir)

    @cached_property
    def speech(self) -> SpeechWork:
        """Part 3's helpers (``coursekit.speechwork.SpeechWork``): speech features, folds, recipe, adaptation, records."""
        return SpeechWork(self.recorder, self.data_dir)


def start_session(notebook: str, *, profile: str = "auto", seed: int = 0, data_dir: str | None = None,
                  run_dir: str = "runs/latest", dataset: str = "cifar10", print_report: bool = True,
                  **overrides) -> Session:
    """Validate the common parameters, seed everything and return a ``Session``.

    ``overrides`` are profile settings given explicitly (None keeps the profile's).
    Every bad value raises ValueError here, before any data is read or model trained. On a dataset the numeric
    targets were not set for (``TARGETS_SET_ON``), the profile's ``exercise_judge`` becomes "none": the chapter's
    exercise reports its measurements and stops nothing.
    """
    settings = resolve_profile(profile, **overrides)
    for key in settings.model_spec_fields():
        check_spec(key, settings[key])
    if dataset not in (*TEXT_DATASETS, *SPEECH_DATASETS):
        _data.parse_dataset(dataset)
    seed_everything(seed)
    device = pick_device(settings.name)
    rd = resolve_run_dir(run_dir)
    rd.mkdir(parents=True, exist_ok=True)
    targets_apply = dataset in (*TEXT_DATASETS, *SPEECH_DATASETS, *TARGETS_SET_ON)
    if not targets_apply:
        settings["exercise_judge"] = "none"  # a numeric-target exercise reports its measurements on data it was not set for
    report = environment_report(settings, device)
    report.update({"notebook": notebook, "seed": seed, "dataset": dataset, "run_dir": str(rd),
                   "data_dir": str(default_data_dir(data_dir))})
    if not targets_apply:
        report["exercise_targets"] = f"set for {', '.join(TARGETS_SET_ON)}: on {dataset} reported, not judged"
    if profile == "auto" and settings.name == "gpu" and "dry_run" not in settings:
        report["note"] = f"profile 'auto' chose gpu (CUDA is available): {GPU_PROFILE_NOTE}"
    if print_report:
        print(json.dumps(report, indent=1))
    return Session(notebook, settings, seed, device, dataset, data_dir, rd, report)
