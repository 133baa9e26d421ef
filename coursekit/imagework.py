"""Part 1's helpers bound to a notebook's session (chapters 00-06): data and batches with the profile's caps, the
profile's training recipe, the run-dir cache of the base and source models, accuracy and paired tests, and the
ledger records of image models. ``session.images`` hands one out. Introduced in notebooks/00_baseline.ipynb.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import torch

from . import data as _data
from .checkpoints import train_or_load
from .metrics import state_dict_bytes
from .models import model_from_spec
from .prune import detach_masked_weights
from .recipe import Recipe
from .recorder import PartHelpers, representatives
from .stats import mcnemar
from .train import evaluate, predict_logits

__all__ = ["ImageWork"]


class ImageWork(PartHelpers):
    """The image helpers of one session (``recorder``, ``data_dir``, and through them ``profile``, ``device``, ``seed``)."""

    def load_data(self, dataset: str | None = None, **kwargs) -> _data.DataSplits:
        """``coursekit.data.load_data`` with the session's dataset (unless ``dataset`` is given), seed and
        profile caps, moved to the device."""
        P = self.profile
        args = {"train_per_class": P.train_per_class, "test_per_class": P.test_per_class,
                "val_fraction": P.val_fraction, "seed": self.seed}
        args.update(kwargs)
        return _data.load_data(dataset or self.recorder.dataset, self.data_dir, **args).to(self.device)

    def batches(self, splits: _data.DataSplits, split: str, *, train: bool | None = None, batch_size: int | None = None,
                seed: int | None = None) -> _data.Batches:
        """Batches over ``split`` ("train", "val" or "test"); shuffled and augmented only for "train"."""
        if split not in ("train", "val", "test"):
            raise ValueError(f"split: {split!r} is not allowed; use train, val or test")
        train = (split == "train") if train is None else train
        bs = batch_size or (self.profile.batch_size if train else 1000)
        return _data.Batches(getattr(splits, f"{split}_x"), getattr(splits, f"{split}_y"), splits.mean, splits.std,
                             bs, shuffle=train, augment=train, drop_last=train and len(splits.train_y) > bs,
                             seed=self.seed if seed is None else seed, channels_last=self.profile.channels_last,
                             pad=self.profile.crop_pad)

    def profile_recipe(self, splits: _data.DataSplits, epochs: int) -> Recipe:
        """The profile's training recipe (the one 00_baseline explains: one-cycle SGD, label smoothing, autocast
        as resolved on this machine, channels_last) for ``epochs`` on ``splits``, with the data that shaped the
        weights in ``data``. Every Part 1 training call and cache key is built from it."""
        P = self.profile
        data = {"dataset": self.recorder.dataset, "image_size": splits.image_size, "classes": list(splits.classes),
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
        return recipe.fit(model, self.batches(splits, "train"), val_batches=val, device=self.device, progress=progress,
                          log_dir=log_dir, seed_global=False)

    def finetune(self, model, splits: _data.DataSplits, epochs: int, *, seed: int | None = None, loss_fn=None,
                 on_step=None, progress: bool = False) -> dict:
        """Fine-tune a compressed ``model`` after pruning or trimming: ``profile_recipe`` with the peak learning rate
        scaled by ``finetune_lr_factor`` (the weights are already good; a full-size step would undo them), batch
        order from ``seed``. ``loss_fn`` (e.g. KD) and ``on_step`` (e.g. AGP) go to ``fit``. Returns the history."""
        P = self.profile
        recipe = self.profile_recipe(splits, epochs).with_(lr=P.lr * P.finetune_lr_factor)
        history = recipe.fit(model, self.batches(splits, "train", seed=seed), device=self.device, loss_fn=loss_fn,
                             on_step=on_step, progress=progress, seed_global=False)
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

    def trained_model(self, name: str, spec: dict, splits: _data.DataSplits, progress: bool = True, log_dir=None,
                      epochs: int | None = None):
        """A model of ``spec`` trained with ``profile_recipe`` for ``epochs`` (default: the profile's): reused from
        the run-dir cache (``coursekit.modelcache``) when one was trained with the same config, else trained and saved
        (its training curves and graph written to TensorBoard in ``log_dir`` when given; a reused model writes none).

        Returns (model in eval mode, info with "spec", "config" and "metrics" (the history), reused flag).
        """
        epochs = self.profile.epochs if epochs is None else epochs
        config = self.base_config(splits, spec, epochs)

        def train():
            torch.manual_seed(self.seed)
            model = model_from_spec(config["spec"]).to(self.device)
            return model, {"history": self.fit_profile(model, splits, epochs, progress=progress, log_dir=log_dir)}

        return train_or_load(self.recorder.run_dir, name, config, train, device=self.device)

    def base_model(self, splits: _data.DataSplits, progress: bool = True, log_dir=None):
        """The base model of 00_baseline (``trained_model("base", profile.base_model, ...)``): later chapters
        call this to get their teacher / the model they compress, trained once per run dir."""
        return self.trained_model("base", self.profile.base_model, splits, progress=progress, log_dir=log_dir)

    def source_model(self, source_classes, progress: bool = True):
        """The source model of 01_transfer_learning: the base architecture trained with the profile's recipe
        for ``source_epochs`` on all training images of ``source_classes`` (CIFAR-10 class names), cached like
        ``trained_model``. Returns (model in eval mode, info, reused flag, the source DataSplits)."""
        P = self.profile
        source_data = self.load_data(dataset="cifar10", classes=list(source_classes))
        spec = {**P.base_model, "num_classes": len(source_classes)}
        config = self.base_config(source_data, spec, epochs=P.source_epochs)
        config["recipe"]["data"]["dataset"] = "cifar10"  # the source task is always CIFAR-10 classes

        def train():
            torch.manual_seed(self.seed)
            model = model_from_spec(spec).to(self.device)
            return model, {"history": self.fit_profile(model, source_data, P.source_epochs, progress=progress)}

        model, info, reused = train_or_load(self.recorder.run_dir, "source", config, train, device=self.device)
        return model, info, reused, source_data

    def record_all(self, entries: list[dict], input_size=(3, 32, 32), rounds: int | None = None) -> dict[str, dict]:
        """Record image models whose latencies are compared: ``entries`` are dicts with model, stage, name, accuracy,
        extra (and seed). One model per architecture is timed, side by side with the others in ``rounds``
        interleaved rounds (default: the profile's ``latency_rounds``), at the profile's batch sizes; their state
        dicts are compressed in parallel. Returns {name: record}."""
        models, rep_of = representatives(entries, "record_all")
        rounds = self.profile.latency_rounds if rounds is None else rounds
        latency = self.recorder.latency_table({n: models[n] for n in dict.fromkeys(rep_of.values())},
                                              self.profile.latency_batch_sizes, input_size=input_size, rounds=rounds)
        with ThreadPoolExecutor(max(1, torch.get_num_threads())) as pool:  # gzip releases the GIL: models side by side
            sizes = dict(zip(models, pool.map(state_dict_bytes, models.values()), strict=True))
        return self.recorder.record_models(entries, latency=latency, representative=rep_of, sizes=sizes,
                                           input_size=input_size)

    def record(self, model, *, stage: str, name: str, accuracy: float | None, extra: dict | None = None,
               input_size=(3, 32, 32), seed: int | None = None) -> dict:
        """Measure one image model (params, MACs, size, latency, as ``record_all`` does) and append its record."""
        entry = {"model": model, "stage": stage, "name": name, "accuracy": accuracy, "extra": extra, "seed": seed}
        return self.record_all([entry], input_size=input_size)[name]
