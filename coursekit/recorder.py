"""Measuring models and writing their records to the run ledger: the one record loop of the course.

A chapter that compares models records them together: ``representatives`` picks one model per architecture (two
copies of one computation never show two latencies that differ only by the machine's noise), the part measures
those once (``latency_table``: side by side in interleaved rounds, the one latency policy of
``metrics.latency_medians``), and ``Recorder.record_models`` writes one ledger record per model. Part 1's images
(``coursekit.imagework``) and Part 2's text and language models (``coursekit.textwork``) differ only in what they
measure. Introduced in notebooks/00_baseline.ipynb.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from .ledger import append_record
from .metrics import latency_medians, model_record
from .settings import Profile

__all__ = ["Recorder", "PartHelpers", "same_architecture", "representatives"]


def same_architecture(models: dict) -> dict[str, str]:
    """{name: the first model of ``models`` with the same architecture}: the same class, parameter and buffer names
    and shapes, so the same computation (weights aside). Latency is a property of the computation: the chapters time
    one model per architecture and give its figure to the others, so two copies never show two figures that differ
    only by the machine's noise (04 once showed 2.48 and 3.18 ms for one architecture)."""
    first: dict[tuple, str] = {}
    rep_of = {}
    for name, m in models.items():
        key = (type(m).__name__, tuple((k, tuple(v.shape)) for k, v in m.state_dict().items()))
        rep_of[name] = first.setdefault(key, name)
    return rep_of


def representatives(entries: list[dict], what: str = "record") -> tuple[dict, dict]:
    """The models of ``entries`` (dicts with "name" and "model") by name, refused when two share a name, and
    ``same_architecture`` of them. Returns ({name: model}, {name: name of its representative})."""
    models = {e["name"]: e["model"] for e in entries}
    if len(models) != len(entries):
        raise ValueError(f"{what}: model names must be unique, got {[e['name'] for e in entries]}")
    return models, same_architecture(models)


@dataclass
class Recorder:
    """What a record is made in: the chapter (``notebook``), the resolved ``profile``, ``device``, default ``seed``,
    ``dataset`` and the ``run_dir`` whose ledger it appends to."""

    notebook: str
    profile: Profile
    device: torch.device
    seed: int
    dataset: str
    run_dir: Path

    def latency_measurements(self, models: dict, batch_sizes, *, input_size=(3, 32, 32), input_fn=None,
                             key_suffix: str = "", rounds: int = 3) -> dict[str, dict[str, dict]]:
        """The one latency measurement behind every comparison (``metrics.latency_medians``): ``models`` timed side
        by side in ``rounds`` interleaved rounds on the CPU (batches up to 64, or all on a CPU session) and, on a
        CUDA session, on the GPU at every batch size.
        Returns {name: {"cpu_b64": {"median_ms", "min_ms", "max_ms"}, "cuda_b256": {...}}} (over the rounds)."""
        return latency_medians(models, batch_sizes, device=self.device, rounds=rounds, input_size=input_size,
                               min_run_time=self.profile.latency_min_time, input_fn=input_fn, key_suffix=key_suffix,
                               ranges=True)

    def latency_table(self, models: dict, batch_sizes, *, input_size=(3, 32, 32), input_fn=None, key_suffix: str = "",
                      rounds: int = 3) -> dict[str, dict[str, float]]:
        """The medians of ``latency_measurements``: {name: {"cpu_b64": median ms, "cuda_b256": ...}}, what the
        ledger's ``latency_ms`` holds."""
        return latency_medians(models, batch_sizes, device=self.device, rounds=rounds, input_size=input_size,
                               min_run_time=self.profile.latency_min_time, input_fn=input_fn, key_suffix=key_suffix)

    def record_models(self, entries: list[dict], *, latency: dict, representative: dict, macs: dict | None = None,
                      sizes: dict | None = None, input_size=(3, 32, 32), extra: dict | None = None,
                      fields=None, dataset: str | None = None, fast_gzip: bool = False) -> dict[str, dict]:
        """Append one ledger record per entry (dicts with model, stage, name, accuracy, extra, seed) and return
        {name: record}.

        ``latency`` is keyed by representative (``representative[name]``; a model measured on another names it in
        ``extra["latency_measured_on"]``), ``macs`` and ``sizes`` (``metrics.state_dict_bytes``) by name; MACs not
        given are counted on ``input_size``. ``extra`` goes first into every record's extra; ``fields`` (a dict, or a
        function of the entry) adds Part 2's ledger fields; ``dataset`` defaults to the recorder's."""
        out = {}
        for e in entries:
            rep = representative[e["name"]]
            rec_extra = {**(extra or {}), **(e.get("extra") or {})}
            if rep != e["name"]:
                rec_extra["latency_measured_on"] = rep
            seed = e.get("seed")
            rec = model_record(e["model"], notebook=self.notebook, stage=e["stage"], name=e["name"],
                               accuracy=e.get("accuracy"), dataset=dataset or self.dataset, profile=self.profile.name,
                               device=self.device, seed=self.seed if seed is None else seed,
                               latency_batch_sizes=self.profile.latency_batch_sizes, input_size=input_size,
                               min_run_time=self.profile.latency_min_time, extra=rec_extra, latency_ms=latency[rep],
                               macs=None if macs is None else macs[e["name"]],
                               sizes=None if sizes is None else sizes[e["name"]],
                               fields=fields(e) if callable(fields) else fields, fast_gzip=fast_gzip)
            append_record(self.run_dir, rec)
            out[e["name"]] = rec
        return out


@dataclass
class PartHelpers:
    """What a part's session helpers (``imagework.ImageWork``, ``textwork.TextWork``) are bound to: the session's
    ``recorder`` (profile, seed, device, dataset, run dir) and its ``data_dir``."""

    recorder: Recorder
    data_dir: str | None

    @property
    def profile(self) -> Profile:
        return self.recorder.profile

    @property
    def device(self) -> torch.device:
        return self.recorder.device

    @property
    def seed(self) -> int:
        return self.recorder.seed
