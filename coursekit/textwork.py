"""Part 2's helpers bound to a notebook's session (chapters 07-10): text data and batches with the profile's limits,
the profile's text recipe, the run-dir cache of the fine-tuned encoder, and the ledger records of text classifiers
and language models. ``session.text`` hands one out. Introduced in notebooks/07_transformer_transfer.ipynb.
"""

from __future__ import annotations

import time

from .llm import linear_macs_per_token
from .recipe import Recipe
from .recorder import PartHelpers, representatives
from .textdata import TextBatches, load_text_task

__all__ = ["TextWork", "FROZEN_WHEN_FINETUNING"]

# fine-tuning a pretrained encoder keeps its token-embedding table (half of MiniLM's parameters, no MACs) frozen
FROZEN_WHEN_FINETUNING = ("encoder.embeddings.word_embeddings",)


class TextWork(PartHelpers):
    """The text helpers of one session (``recorder``, ``data_dir``, and through them ``profile``, ``device``, ``seed``)."""

    def text_data(self, tokenizer, task: str | None = None):
        """``textdata.load_text_task`` of ``task`` (default: the session's dataset) with the profile's length and
        limits and this session's seed and data dir."""
        P = self.profile
        return load_text_task(task or self.recorder.dataset, tokenizer, data_dir=self.data_dir,
                              max_length=P.text_max_length, seed=self.seed, test_limit=P.text_test_limit,
                              train_limit=P.text_train_limit)

    def text_batches(self, split, pad_id: int, *, train: bool = False, batch_size: int | None = None,
                     seed: int | None = None) -> TextBatches:
        """``TextBatches`` on the session's device: shuffled and bucketed for training, sorted by length otherwise."""
        bs = batch_size or (self.profile.text_batch_size if train else 128)
        return TextBatches(split, bs, pad_id=pad_id, shuffle=train, seed=self.seed if seed is None else seed,
                           device=self.device, drop_last=False)

    def text_recipe(self, *, epochs: int, lr: float, batch_size: int, seed: int | None = None, frozen=(),
                    data=None) -> Recipe:
        """The profile's recipe for text models: AdamW with ``text_weight_decay``, one-cycle, the profile's autocast
        resolved on this machine, no channels_last (no images). Every Part 2 training call and cache key comes
        from it."""
        P = self.profile
        return Recipe(epochs=epochs, lr=lr, batch_size=batch_size, seed=self.seed if seed is None else seed,
                      optimizer="adamw", weight_decay=P.text_weight_decay, amp=Recipe.resolve_amp(P.amp, self.device),
                      channels_last=False, frozen=tuple(frozen), data=dict(data or {}))

    def train_text(self, model, split, pad_id: int, *, lr: float, seed: int, epochs: int | None = None,
                   steps: int | None = None, batch_size: int | None = None, frozen=(), loss_fn=None,
                   progress: bool = False) -> tuple[dict, float]:
        """Train a text classifier on ``split`` with ``text_recipe``: ``epochs`` passes, or about ``steps`` optimizer
        steps (few-label runs, where an epoch is one or two batches). Returns (history, training seconds)."""
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
        """The pretrained encoder fine-tuned on all of ``splits``' training sentences with ``text_recipe`` (token
        embeddings frozen): 07_transformer_transfer's "finetune" model and 08's teacher. Reused from the run-dir
        cache when a model was trained with the same recipe (data, schedule, seed, autocast, attention kernel and
        source), else built with ``build()`` (whose encoder should use the profile's ``text_attention``), trained
        and saved. Returns (model in eval mode, info, reused flag)."""
        from .textmodels import train_or_load_text  # lazily: it imports transformers

        P = self.profile
        recipe = self.text_recipe(
            epochs=P.text_epochs, lr=P.text_lr, batch_size=P.text_batch_size, frozen=FROZEN_WHEN_FINETUNING,
            data={"task": splits.task, "labels_per_class": "all", "n_train": len(splits.train),
                  "max_length": P.text_max_length, "pooling": "mean", "model": location.path, "gguf": location.gguf_file,
                  "attention": P.text_attention})
        batches = self.text_batches(splits.train, splits.pad_id, train=True, batch_size=P.text_batch_size)
        return train_or_load_text(self.recorder.run_dir, f"finetune-{splits.task}", recipe, build, batches,
                                  device=self.device, progress=progress, attn_implementation=P.text_attention)

    def record_text(self, entries: list[dict], task: str, rounds: int | None = None) -> dict[str, dict]:
        """Record text classifiers whose latencies are compared: ``entries`` are dicts with model, stage, name,
        accuracy, extra (and seed). Latency at batch ``text_latency_batch`` and ``text_latency_seq`` tokens
        (key "cpu_b32_s64" on the cpu profile), one model per architecture, side by side in ``rounds`` interleaved
        rounds (default: the profile's ``latency_rounds``); MACs per sequence at that length (attention included).
        Returns {name: record}."""
        from .textmodels import count_text_macs, text_input_fn  # lazily, as above

        P = self.profile
        models, rep_of = representatives(entries, "record_text")
        reps = {n: models[n] for n in dict.fromkeys(rep_of.values())}
        seq, batch = P.text_latency_seq, P.text_latency_batch
        vocab = min(m.encoder.config.vocab_size for m in reps.values())
        latency = self.recorder.latency_table(reps, [batch], input_fn=text_input_fn(seq, vocab), key_suffix=f"_s{seq}",
                                              rounds=self.profile.latency_rounds if rounds is None else rounds)
        rep_macs = {n: count_text_macs(m, seq) for n, m in reps.items()}
        macs = {name: rep_macs[rep] for name, rep in rep_of.items()}
        return self.recorder.record_models(entries, latency=latency, representative=rep_of, macs=macs,
                                           extra={"seq_len_for_macs": seq, "gzip": "huffman-only"},
                                           fields={"task": task, "perplexity": None}, dataset=task, fast_gzip=True)

    def record_lm(self, entries: list[dict], task: str, latency: dict[str, dict]) -> dict[str, dict]:
        """Record language models: ``entries`` are dicts with model, stage, name, perplexity, extra and
        ``latency_of`` (the name in ``latency`` whose measurement this model shares: ``llm.lm_latency`` times each
        distinct architecture once). Latency keys "cpu_prefill_s{P}" and "cpu_decode_tok"; ``macs`` per token
        of the linear layers (lm_head included, attention scores excluded). Returns {name: record}."""
        by_name = {e["name"]: e for e in entries}
        rep_of = {e["name"]: e["latency_of"] for e in entries}
        table = {rep: {f"cpu_prefill_s{lat['prompt_len']}": round(lat["prefill_ms"], 3),
                       "cpu_decode_tok": round(lat["decode_ms_per_token"], 3)} for rep, lat in latency.items()}
        macs = {e["name"]: linear_macs_per_token(e["model"]) for e in entries}
        entries = [{**e, "accuracy": None, "extra": {"macs_per": "token, linear layers",
                                                     "latency_measured_on": e["latency_of"], "gzip": "huffman-only",
                                                     **(e.get("extra") or {})}} for e in entries]
        return self.recorder.record_models(
            entries, latency=table, representative=rep_of, macs=macs, dataset=task, fast_gzip=True,
            fields=lambda e: {"task": task, "perplexity": round(float(by_name[e["name"]]["perplexity"]), 4)})
