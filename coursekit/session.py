"""The setup every notebook does first: resolve the profile, seed, pick the device,
resolve the run dir, and print the environment report.

``start_session`` returns a ``Session`` that later cells use to build data
loaders, reuse cached models and write ledger records, so no notebook copies
setup code from another. Introduced in notebooks/00_baseline.ipynb.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import data as _data
from .checkpoints import train_or_load
from .env import environment_report, pick_device, seed_everything
from .ledger import append_record
from .llm import linear_macs_per_token
from .metrics import latency_medians, model_record, state_dict_bytes
from .models import model_from_spec
from .paths import REPO_ROOT, default_data_dir
from .profiles import GPU_PROFILE_NOTE, Profile, resolve_profile
from .prune import detach_masked_weights
from .recipe import Recipe
from .stats import mcnemar
from .textdata import TextBatches, load_text_task
from .train import evaluate, fit, predict_logits

__all__ = ["Session", "start_session", "resolve_run_dir", "same_architecture", "TEXT_DATASETS"]

TEXT_DATASETS = ("sst2", "trec", "wikitext2")
TARGETS_SET_ON = ("cifar10",)  # the data the numeric-target exercises' targets were set on (checks.check_target)
# fine-tuning a pretrained encoder keeps its token-embedding table (half of MiniLM's parameters, no MACs) frozen
FROZEN_WHEN_FINETUNING = ("encoder.embeddings.word_embeddings",)  # Part 2's tasks: checked by the text loaders, not parse_dataset



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


@dataclass
class Session:
    """What a notebook resolved at setup: ``notebook`` stem, ``profile``, ``seed``, ``device``,
    ``dataset``, ``data_dir``, ``run_dir`` (created) and the ``report`` dict."""

    notebook: str
    profile: Profile
    seed: int
    device: torch.device
    dataset: str
    data_dir: str | None
    run_dir: Path
    report: dict = field(default_factory=dict)

    def load_data(self, dataset: str | None = None, **kwargs) -> _data.DataSplits:
        """``coursekit.data.load_data`` with this session's dataset (unless ``dataset`` is given), seed and
        profile caps, moved to the device."""
        args = {"train_per_class": self.profile.train_per_class, "test_per_class": self.profile.test_per_class,
                "val_fraction": self.profile.val_fraction, "seed": self.seed}
        args.update(kwargs)
        return _data.load_data(dataset or self.dataset, self.data_dir, **args).to(self.device)

    def batches(self, splits: _data.DataSplits, split: str, *, train: bool | None = None, batch_size: int | None = None,
                seed: int | None = None) -> _data.Batches:
        """Batches over ``split`` ("train", "val" or "test"); shuffled and augmented only for "train"."""
        if split not in ("train", "val", "test"):
            raise ValueError(f"split: unknown value {split!r}; allowed: train, val, test")
        train = (split == "train") if train is None else train
        bs = batch_size or (self.profile.batch_size if train else 1000)
        return _data.Batches(getattr(splits, f"{split}_x"), getattr(splits, f"{split}_y"), splits.mean, splits.std,
                             bs, shuffle=train, augment=train, drop_last=train and len(splits.train_y) > bs,
                             seed=self.seed if seed is None else seed, channels_last=self.profile.channels_last,
                             pad=self.profile.crop_pad)

    def profile_recipe(self, splits: _data.DataSplits, epochs: int) -> Recipe:
        """The profile's training recipe (the one 00_baseline explains: one-cycle SGD, label smoothing, autocast
        as resolved on this machine, channels_last) for ``epochs`` on ``splits``, with the data that shaped the
        weights in ``data``. ``fit_profile`` trains with it and the run-dir cache keys come from it."""
        P = self.profile
        data = {"dataset": self.dataset, "image_size": splits.image_size, "classes": list(splits.classes),
                "n_train": len(splits.train_y), "train_per_class": P.train_per_class, "val_fraction": P.val_fraction,
                "crop_pad": P.crop_pad}
        return Recipe(epochs=epochs, lr=P.lr, batch_size=P.batch_size, seed=self.seed, optimizer="sgd",
                      schedule="onecycle", weight_decay=P.weight_decay, label_smoothing=P.label_smoothing,
                      amp=Recipe.resolve_amp(P.amp, self.device), channels_last=P.channels_last, data=data)

    def fit_profile(self, model, splits: _data.DataSplits, epochs: int, progress: bool = True, log_dir=None) -> dict:
        """Train ``model`` on ``splits`` with ``profile_recipe`` (validation after each epoch when the splits have
        a validation set; TensorBoard event files in ``log_dir`` when given). Returns the history of ``fit``."""
        recipe = self.profile_recipe(splits, epochs)
        val = self.batches(splits, "val") if len(splits.val_y) else None
        return fit(model, self.batches(splits, "train"), val_batches=val, device=self.device, progress=progress,
                   log_dir=log_dir, **recipe.fit_kwargs())

    def finetune(self, model, splits: _data.DataSplits, epochs: int, *, seed: int | None = None, loss_fn=None,
                 on_step=None, progress: bool = False) -> dict:
        """Fine-tune a compressed ``model`` after pruning or trimming: the profile's recipe with the
        peak learning rate scaled by ``finetune_lr_factor`` (the weights are already good; a full-size
        step would undo them), batch order from ``seed``. ``loss_fn`` (e.g. KD) and ``on_step`` (e.g.
        AGP) go to ``fit``. Returns the history."""
        P = self.profile
        history = fit(model, self.batches(splits, "train", seed=seed), epochs=epochs, lr=P.lr * P.finetune_lr_factor,
                      weight_decay=P.weight_decay, label_smoothing=P.label_smoothing, amp=P.amp,
                      channels_last=P.channels_last, loss_fn=loss_fn, on_step=on_step, device=self.device,
                      progress=progress)
        detach_masked_weights(model)  # a masked model stays copyable after training
        return history

    def accuracy(self, model, splits: _data.DataSplits, split: str = "test") -> float:
        """Accuracy of ``model`` on ``split`` (test by default), with flip TTA when the profile says so."""
        return evaluate(model, self.batches(splits, split), amp=self.profile.amp, tta=self.profile.tta)["accuracy"]

    def paired_test(self, model_a, model_b, splits: _data.DataSplits, names=("A", "B"), split: str = "test") -> dict:
        """Two models compared on the same examples (Dietterich 1998): their predictions on ``split`` (as
        ``accuracy`` makes them), the exact McNemar test on the examples exactly one of them gets right.

        Returns {"a_only", "b_only", "p_value", "difference" (accuracy of A minus B, points), "text": one line that
        says which is better, or that the difference is within the noise (p >= 0.05)}."""
        correct = []
        for m in (model_a, model_b):
            logits, y = predict_logits(m, self.batches(splits, split), amp=self.profile.amp, tta=self.profile.tta)
            correct.append((logits.argmax(1) == y).cpu().numpy())
        res = mcnemar(*correct)
        diff = 100 * (correct[0].mean() - correct[1].mean())
        verdict = (f"{names[0] if diff > 0 else names[1]} is better" if res["p_value"] < 0.05
                   else "within the noise (no winner)")
        res["difference"] = float(diff)
        res["text"] = (f"{names[0]} - {names[1]}: {diff:+.2f} points on {len(correct[0]):,} {split} images; only "
                       f"{names[0]} right on {res['a_only']}, only {names[1]} on {res['b_only']}: exact McNemar "
                       f"p = {res['p_value']:.3f}, {verdict}")
        return res

    def base_config(self, splits: _data.DataSplits, spec: dict | None = None, epochs: int | None = None) -> dict:
        """The key of the run-dir cache of a model of ``spec`` (default: the profile's base model) trained with
        ``profile_recipe``: the model spec and every field of the recipe (data, schedule, seed, resolved autocast,
        channels_last, recipe version), so that a change to any of them trains a new model."""
        P = self.profile
        recipe = self.profile_recipe(splits, P.epochs if epochs is None else epochs)
        return {"spec": {**(P.base_model if spec is None else spec), "num_classes": splits.num_classes},
                "recipe": recipe.as_dict()}

    def trained_model(self, name: str, spec: dict, splits: _data.DataSplits, progress: bool = True, log_dir=None):
        """A model of ``spec`` trained with the profile's recipe (``fit_profile``, ``epochs``): reused from
        ``<run_dir>/checkpoints/<name>-<key>.pt`` when one was trained with the same config, else trained and saved
        (its training curves and graph written to TensorBoard in ``log_dir`` when given; a reused model writes none).

        Returns (model in eval mode, info with "config" and "metrics" (the history), reused flag).
        """
        config = self.base_config(splits, spec)
        P = self.profile

        def train():
            torch.manual_seed(self.seed)
            model = model_from_spec(config["spec"]).to(self.device)
            return model, {"history": self.fit_profile(model, splits, P.epochs, progress=progress, log_dir=log_dir)}

        return train_or_load(self.run_dir, name, config, train, device=self.device)

    def base_model(self, splits: _data.DataSplits, progress: bool = True, log_dir=None):
        """The base model of 00_baseline (``trained_model("base", profile.base_model, ...)``): later chapters
        call this to get their teacher / the model they compress, trained once per run dir."""
        return self.trained_model("base", self.profile.base_model, splits, progress=progress, log_dir=log_dir)

    def source_model(self, source_classes, progress: bool = True):
        """The source model of 01_transfer_learning: the base architecture trained with the profile's recipe
        for ``source_epochs`` on all training images of ``source_classes`` (CIFAR-10 class names). Reused from
        the run dir when 01 (or an earlier call) trained it with the same config, else trained and saved.

        Returns (model in eval mode, info, reused flag, the source DataSplits).
        """
        P = self.profile
        source_data = self.load_data(dataset="cifar10", classes=list(source_classes))
        spec = {**P.base_model, "num_classes": len(source_classes)}
        config = self.base_config(source_data, spec, epochs=P.source_epochs)
        config["recipe"]["data"]["dataset"] = "cifar10"  # the source task is always CIFAR-10 classes

        def train():
            torch.manual_seed(self.seed)
            model = model_from_spec(spec).to(self.device)
            return model, {"history": self.fit_profile(model, source_data, P.source_epochs, progress=progress)}

        model, info, reused = train_or_load(self.run_dir, "source", config, train, device=self.device)
        return model, info, reused, source_data

    def record_all(self, entries: list[dict], input_size=(3, 32, 32), rounds: int | None = None) -> dict[str, dict]:
        """Record several models whose latencies will be compared: ``entries`` are dicts with the keyword
        arguments of ``record`` (model, stage, name, accuracy, extra, seed). Their latencies are measured side
        by side in ``rounds`` interleaved rounds (``metrics.compare_latency``; default: the profile's
        ``latency_rounds``, 3 on cpu and gpu), so that drift of the machine between the measurements does not
        masquerade as a speedup. Returns {name: record}."""
        P = self.profile
        rounds = P.latency_rounds if rounds is None else rounds
        models = {e["name"]: e["model"] for e in entries}
        if len(models) != len(entries):
            raise ValueError(f"record_all: model names must be unique, got {[e['name'] for e in entries]}")
        rep_of = same_architecture(models)
        latency = self.latency_table({n: models[n] for n in dict.fromkeys(rep_of.values())}, P.latency_batch_sizes,
                                     input_size=input_size, rounds=rounds)
        with ThreadPoolExecutor(max(1, torch.get_num_threads())) as pool:  # gzip releases the GIL: models side by side
            sizes = dict(zip(models, pool.map(state_dict_bytes, models.values()), strict=True))
        out = {}
        for e in entries:
            rep = rep_of[e["name"]]
            extra = dict(e.get("extra") or {})
            if rep != e["name"]:
                extra["latency_measured_on"] = rep
            out[e["name"]] = self.record(**{**e, "extra": extra}, input_size=input_size, latency_ms=latency[rep],
                                         sizes=sizes[e["name"]])
        return out

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

    def record(self, model, *, stage: str, name: str, accuracy: float | None, extra: dict | None = None,
               input_size=(3, 32, 32), seed: int | None = None, latency_ms: dict | None = None,
               sizes: dict | None = None) -> dict:
        """Measure ``model`` (params, MACs, size, latency) and append its record to the run ledger.

        ``seed`` defaults to the session's; pass the seed a model was trained with when a chapter runs several.
        ``latency_ms`` and ``sizes`` (``metrics.state_dict_bytes``) give what was measured already; without them the
        model is measured as ``record_all`` measures (the one latency policy, in the profile's rounds).
        """
        if latency_ms is None:
            entry = {"model": model, "stage": stage, "name": name, "accuracy": accuracy, "extra": extra, "seed": seed}
            return self.record_all([entry], input_size=input_size)[name]
        rec = model_record(model, notebook=self.notebook, stage=stage, name=name, accuracy=accuracy,
                           dataset=self.dataset, profile=self.profile.name, device=self.device,
                           seed=self.seed if seed is None else seed,
                           latency_batch_sizes=self.profile.latency_batch_sizes, input_size=input_size,
                           min_run_time=self.profile.latency_min_time, extra=extra, latency_ms=latency_ms,
                           sizes=sizes)
        append_record(self.run_dir, rec)
        return rec


    # ------------------------------------------------------------------ Part 2: text

    def text_data(self, tokenizer, task: str | None = None):
        """``textdata.load_text_task`` of ``task`` (default: the session's dataset) with the profile's length and
        limits and this session's seed and data dir."""
        P = self.profile
        return load_text_task(task or self.dataset, tokenizer, data_dir=self.data_dir, max_length=P.text_max_length,
                              seed=self.seed, test_limit=P.text_test_limit, train_limit=P.text_train_limit)

    def text_batches(self, split, pad_id: int, *, train: bool = False, batch_size: int | None = None,
                     seed: int | None = None):
        """``TextBatches`` on the session's device: shuffled and bucketed for training, sorted by length otherwise."""
        bs = batch_size or (self.profile.text_batch_size if train else 128)
        return TextBatches(split, bs, pad_id=pad_id, shuffle=train, seed=self.seed if seed is None else seed,
                           device=self.device, drop_last=False)

    def text_recipe(self, *, epochs: int, lr: float, batch_size: int, seed: int | None = None, frozen=(), data=None,
                    weight_decay: float = 0.01):
        """A ``Recipe`` for text models: AdamW, one-cycle, the profile's autocast resolved on this machine."""
        return Recipe(epochs=epochs, lr=lr, batch_size=batch_size, seed=self.seed if seed is None else seed,
                      weight_decay=weight_decay, amp=Recipe.resolve_amp(self.profile.amp, self.device),
                      frozen=tuple(frozen), data=dict(data or {}))

    def train_text(self, model, split, pad_id: int, *, lr: float, seed: int, epochs: int | None = None,
                   steps: int | None = None, batch_size: int | None = None, frozen=(), loss_fn=None,
                   progress: bool = False) -> tuple[dict, float]:
        """Train a text classifier on ``split`` with ``text_recipe`` (AdamW, one-cycle, autocast as resolved):
        ``epochs`` passes, or about ``steps`` optimizer steps (few-label runs, where an epoch is one or two
        batches). Returns (history, training seconds)."""
        import time

        bs = batch_size or self.profile.text_batch_size
        batches = self.text_batches(split, pad_id, train=True, batch_size=bs, seed=seed)
        if epochs is None:
            if steps is None:
                raise ValueError("train_text: give epochs or steps")
            epochs = max(1, round(steps / len(batches)))
        recipe = self.text_recipe(epochs=epochs, lr=lr, batch_size=bs, seed=seed, frozen=frozen)
        start = time.perf_counter()
        history = recipe.fit(model, batches, device=self.device, loss_fn=loss_fn, progress=progress)
        return history, time.perf_counter() - start

    def text_teacher(self, splits, build, location, progress: bool = True):
        """The pretrained encoder fine-tuned on all of ``splits``' training sentences with the profile's text recipe
        (token embeddings frozen): 07_transformer_transfer's "finetune" model and 08's teacher. Reused from the
        run dir when a model was trained with the same recipe (same data, schedule, seed, autocast, attention kernel
        and source), else built with ``build()`` (whose encoder should use the profile's ``text_attention``), trained
        and saved. Returns (model in eval mode, info, reused flag)."""
        from .textmodels import train_or_load_text  # lazily: it imports transformers, which Part 1 never needs

        P = self.profile
        recipe = self.text_recipe(
            epochs=P.text_epochs, lr=P.text_lr, batch_size=P.text_batch_size, frozen=FROZEN_WHEN_FINETUNING,
            data={"task": splits.task, "labels_per_class": "all", "n_train": len(splits.train),
                  "max_length": P.text_max_length, "pooling": "mean", "model": location.path, "gguf": location.gguf_file,
                  "attention": P.text_attention})
        batches = self.text_batches(splits.train, splits.pad_id, train=True, batch_size=P.text_batch_size)
        return train_or_load_text(self.run_dir, f"finetune-{splits.task}", recipe, build, batches, device=self.device,
                                  progress=progress, attn_implementation=P.text_attention)

    def record_text(self, entries: list[dict], task: str, rounds: int | None = None) -> dict[str, dict]:
        """Record text classifiers whose latencies are compared: ``entries`` are dicts with model, stage, name,
        accuracy, extra (and seed). Latency at batch ``text_latency_batch`` and ``text_latency_seq`` tokens
        (key "cpu_b32_s64" on the cpu profile), measured side by side in ``rounds`` interleaved rounds (default: the
        profile's ``latency_rounds``); MACs per sequence at that length (attention included).

        Models with identical architectures (the same parameter names and shapes) do the same computation: one of
        them is timed and counted for all, and the others' ``extra["latency_measured_on"]`` names it.
        Returns {name: record}."""
        from .textmodels import count_text_macs, text_input_fn  # lazily, as above

        P = self.profile
        rounds = P.latency_rounds if rounds is None else rounds
        models = {e["name"]: e["model"] for e in entries}
        if len(models) != len(entries):
            raise ValueError(f"record_text: model names must be unique, got {[e['name'] for e in entries]}")
        rep_of = same_architecture(models)
        reps = {n: models[n] for n in dict.fromkeys(rep_of.values())}
        seq, batch = P.text_latency_seq, P.text_latency_batch
        vocab = min(m.encoder.config.vocab_size for m in reps.values())
        latency = self.latency_table(reps, [batch], input_fn=text_input_fn(seq, vocab), key_suffix=f"_s{seq}",
                                     rounds=rounds)
        macs = {n: count_text_macs(m, seq) for n, m in reps.items()}
        out = {}
        for e in entries:
            rep = rep_of[e["name"]]
            extra = {"seq_len_for_macs": seq, "gzip": "huffman-only", **(e.get("extra") or {})}
            if rep != e["name"]:
                extra["latency_measured_on"] = rep
            rec = model_record(e["model"], notebook=self.notebook, stage=e["stage"], name=e["name"],
                               accuracy=e["accuracy"], dataset=task, profile=self.profile.name, device=self.device,
                               seed=e.get("seed", self.seed), extra=extra, latency_ms=latency[rep], macs=macs[rep],
                               fields={"task": task, "perplexity": None}, fast_gzip=True)
            append_record(self.run_dir, rec)
            out[e["name"]] = rec
        return out


    def record_lm(self, entries: list[dict], task: str, latency: dict[str, dict]) -> dict[str, dict]:
        """Record language models: ``entries`` are dicts with model, stage, name, perplexity, extra and
        ``latency_of`` (the name in ``latency`` whose measurement this model shares: ``llm.lm_latency`` times each
        distinct architecture once). Latency keys "cpu_prefill_s{P}" and "cpu_decode_tok"; ``macs`` per token
        of the linear layers (lm_head included, attention scores excluded). Returns {name: record}."""
        out = {}
        for e in entries:
            lat = latency[e["latency_of"]]
            rec = model_record(e["model"], notebook=self.notebook, stage=e["stage"], name=e["name"], accuracy=None,
                               dataset=task, profile=self.profile.name, device=self.device, seed=e.get("seed", self.seed),
                               extra={"macs_per": "token, linear layers", "latency_measured_on": e["latency_of"],
                                      "gzip": "huffman-only", **(e.get("extra") or {})},
                               latency_ms={f"cpu_prefill_s{lat['prompt_len']}": round(lat["prefill_ms"], 3),
                                           "cpu_decode_tok": round(lat["decode_ms_per_token"], 3)},
                               macs=linear_macs_per_token(e["model"]),
                               fields={"task": task, "perplexity": round(float(e["perplexity"]), 4)}, fast_gzip=True)
            append_record(self.run_dir, rec)
            out[e["name"]] = rec
        return out


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
    if dataset not in TEXT_DATASETS:
        _data.parse_dataset(dataset)
    seed_everything(seed)
    device = pick_device(settings.name)
    rd = resolve_run_dir(run_dir)
    rd.mkdir(parents=True, exist_ok=True)
    targets_apply = dataset in (*TEXT_DATASETS, *TARGETS_SET_ON)
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
