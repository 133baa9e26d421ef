"""A causal language model measured and trimmed: corpora as token streams, perplexity over fixed windows, decoder
layers removed so that generation still works, healing by distillation (and plain fine-tuning, its control), and
prefill / decode latency.

Written for SmolLM2-135M (Llama architecture: ``model.model.layers`` of ``LlamaDecoderLayer``, each with
``self_attn.layer_idx`` naming its slot in the KV cache) through ``transformers``' AutoModelForCausalLM; any model
with the same layout works. Introduced in notebooks/10_llm_compression.ipynb.

Perplexity (what it is): the model predicts each token from the ones before it; with per-token losses
l_t = -log p(x_t | x_<t), PPL = exp(mean_t l_t). It is measured here over windows of ``window`` tokens taken every
``stride`` tokens (stride = window: disjoint windows, every token but each window's first predicted once; a
smaller stride gives each prediction more context and scores only the tokens new to the window).
"""

from __future__ import annotations

import copy
import math
import os
import statistics
import time
from dataclasses import dataclass

import torch
from torch import nn

from .downloads import corpus_folder
from .env import autocast_context, autocast_dtype
from .gptq import GPTQ_BLOCK, GPTQ_DAMP, gptq_linears
from .layerscores import first_output
from .runsettings import dry_run_steps
from .validate import integer, is_int, refuse

__all__ = ["CORPORA", "load_corpus_ids", "perplexity", "decoder_layers", "change_layers_in_order", "gptq_decoder",
           "keep_decoder_layers", "remove_decoder_layers",
           "layers_kept", "validate_layer_indices", "lm_windows", "logit_kd_loss", "heal_with_kd", "fine_tune_lm",
           "lm_latency", "greedy_text", "linear_macs_per_token"]


@dataclass(frozen=True)
class Corpus:
    folder: str
    file: str
    description: str


CORPORA = {
    "wikitext2_test": Corpus("wikitext2", "test.txt", "WikiText-2 test (Merity et al. 2016), tokenised v1"),
    "wikitext2_valid": Corpus("wikitext2", "valid.txt", "WikiText-2 valid"),
    "shakespeare": Corpus("tinyshakespeare", "input.txt", "Tiny Shakespeare (Karpathy)"),
}


def load_corpus_ids(name: str, tokenizer, *, data_dir: str | os.PathLike | None = None,
                    max_tokens: int | None = None) -> torch.Tensor:
    """The whole text of corpus ``name`` (a key of CORPORA) as one (T,) long tensor of token ids, no special
    tokens, optionally only its first ``max_tokens``. A corpus absent from the data dir is fetched first
    (``coursekit.downloads``: WikiText-2 from the hub, Tiny Shakespeare from its raw file). Raises ValueError for an
    unknown name, FileNotFoundError saying where it looked and what it tried."""
    if name not in CORPORA:
        raise ValueError(f"corpus: {name!r} is not allowed; use {', '.join(CORPORA)}")
    c = CORPORA[name]
    path = corpus_folder(c.folder, data_dir) / c.file
    text = path.read_text(encoding="utf-8")
    if max_tokens is not None:
        text = text[: max_tokens * 12]  # enough characters for max_tokens tokens; tokenising 1 MB takes seconds
    ids = torch.tensor(tokenizer(text, add_special_tokens=False)["input_ids"], dtype=torch.long)
    if max_tokens is not None:
        if len(ids) < max_tokens:
            raise ValueError(f"{name}: only {len(ids)} tokens, fewer than the {max_tokens} asked for")
        ids = ids[:max_tokens]
    return ids


def lm_windows(ids: torch.Tensor, window: int, stride: int | None = None):
    """Split a token stream into (input window (1, <=window), number of its last tokens to score) pairs.

    Windows start every ``stride`` tokens (default: ``window``, disjoint). A window scores the tokens no earlier
    window scored, at most window - 1 of them (its first token has no context inside it): with disjoint windows
    every token but each window's first is scored once; with stride < window each scored token sees at least
    window - stride tokens of context."""
    stride = stride or window
    integer("window", window, lo=2)
    integer("stride", stride, lo=1, hi=window, allowed=f"1 to window ({window})")
    out, scored_to = [], 1  # token 0 has no context and is never scored
    for begin in range(0, len(ids) - 1, stride):
        end = min(begin + window, len(ids))
        new = min(end - scored_to, end - begin - 1)
        if new > 0:
            out.append((ids[begin:end].unsqueeze(0), new))
        scored_to = max(scored_to, end)
        if end == len(ids):
            break
    return out


@torch.no_grad()
def perplexity(model: nn.Module, ids: torch.Tensor, *, window: int = 256, stride: int | None = None,
               amp: str = "auto", batch_size: int = 8) -> dict:
    """Perplexity of ``model`` on the token stream ``ids`` (T,): exp of the mean next-token cross-entropy over the
    scored tokens of ``lm_windows(ids, window, stride)``. Disjoint full windows are batched.

    Returns {"perplexity", "nll" (mean loss, nats), "tokens" (scored), "window", "stride", "window_nll" and
    "window_tokens" (each window's summed loss and scored tokens, in window order: what
    ``stats.bootstrap_perplexity_ratio`` resamples)}."""
    model.eval()
    device = next(model.parameters()).device
    dtype = autocast_dtype(device, amp)
    wins = lm_windows(ids, window, stride)
    window_nll, window_tokens = [], []
    i = 0
    while i < len(wins):
        group = [wins[i]]
        while (i + len(group) < len(wins) and len(group) < batch_size
               and wins[i + len(group)][0].shape[1] == group[0][0].shape[1]
               and wins[i + len(group)][1] == group[0][1]):
            group.append(wins[i + len(group)])
        x = torch.cat([w for w, _ in group]).to(device)
        new = group[0][1]
        with autocast_context(device, dtype):
            logits = model(input_ids=x, use_cache=False).logits
        logits, targets = logits[:, -new - 1:-1].float(), x[:, -new:]
        losses = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                             reduction="none").view(len(group), -1)
        window_nll += [float(v) for v in losses.double().sum(1)]
        window_tokens += [targets.shape[1]] * len(group)
        i += len(group)
    count = sum(window_tokens)
    nll = math.fsum(window_nll) / count
    return {"perplexity": math.exp(nll), "nll": nll, "tokens": count, "window": window, "stride": stride or window,
            "window_nll": window_nll, "window_tokens": window_tokens}


# ----------------------------------------------------------------------------- depth

def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder layers of a causal LM (``model.model.layers``)."""
    return model.model.layers


def validate_layer_indices(layers, num_layers: int) -> list[int]:
    """Distinct layer indices in range, at least one layer left; sorted. Raises ValueError saying what is allowed."""
    layers = list(layers)
    if not all(is_int(i) for i in layers) or len(set(layers)) != len(layers):
        refuse("layers", layers, "distinct integer indices")
    if any(not 0 <= i < num_layers for i in layers):
        refuse("layers", layers, f"indices from 0 to {num_layers - 1}")
    if len(layers) >= num_layers:
        refuse("layers", layers, f"at most {num_layers - 1} of the {num_layers} layers (keep at least one)")
    return sorted(layers)


def keep_decoder_layers(model: nn.Module, kept) -> nn.Module:
    """Keep only the decoder layers at indices ``kept`` (in that order), **in place**, and keep what generation needs
    consistent: each remaining attention's ``layer_idx`` (its slot in the KV cache) renumbered 0..n-1,
    ``config.num_hidden_layers`` (the forward loop and DynamicCache read it) and ``config.layer_types`` when the
    config has one. Returns ``model``."""
    kept = list(kept)
    model.model.layers = nn.ModuleList([model.model.layers[i] for i in kept])
    for j, layer in enumerate(model.model.layers):
        layer.self_attn.layer_idx = j
        if hasattr(layer, "layer_idx"):
            layer.layer_idx = j
    model.config.num_hidden_layers = len(kept)
    if getattr(model.config, "layer_types", None):
        model.config.layer_types = [model.config.layer_types[i] for i in kept]
    return model


def layers_kept(layers, num_layers: int) -> list[int]:
    """The indices 0..num_layers-1 that are not in ``layers`` (validated with ``validate_layer_indices``)."""
    gone = set(validate_layer_indices(layers, num_layers))
    return [i for i in range(num_layers) if i not in gone]


def remove_decoder_layers(model: nn.Module, layers) -> nn.Module:
    """A copy of ``model`` without the decoder layers at indices ``layers`` (``keep_decoder_layers`` on a deep copy;
    the original is untouched)."""
    return keep_decoder_layers(copy.deepcopy(model), layers_kept(layers, len(decoder_layers(model))))


# ----------------------------------------------------------------------------- healing

def logit_kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """KL(p_teacher || p_student) per token at temperature T, times T^2 (Hinton et al.): logits (N, L, V) -> scalar.
    The language-model form of chapter 02's soft term (every position is one classification over the vocabulary)."""
    t = temperature
    s = nn.functional.log_softmax(student_logits.float() / t, dim=-1)
    p = nn.functional.log_softmax(teacher_logits.float() / t, dim=-1)
    return nn.functional.kl_div(s.flatten(0, 1), p.flatten(0, 1), log_target=True, reduction="batchmean") * t * t


def heal_with_kd(student: nn.Module, teacher: nn.Module, ids: torch.Tensor, *, steps: int, batch_size: int,
                 seq_len: int, lr: float, params=None, seed: int = 0, amp: str = "auto",
                 temperature: float = 1.0) -> dict:
    """Train ``student`` to match ``teacher``'s next-token distributions on windows of ``ids`` (Minitron's
    healing): ``steps`` AdamW steps on ``batch_size`` random windows of ``seq_len`` tokens (drawn with ``seed``),
    cosine learning rate from ``lr`` to 0, teacher in eval mode under no_grad. ``params``: the parameters to train
    (default: all of the student's). Returns {"losses", "seconds", "tokens" seen}."""
    teacher.eval()

    def kd_loss(x, device, dtype):
        with torch.no_grad(), autocast_context(device, dtype):
            t_logits = teacher(input_ids=x, use_cache=False).logits
        with autocast_context(device, dtype):
            s_logits = student(input_ids=x, use_cache=False).logits
        return logit_kd_loss(s_logits, t_logits, temperature)

    return _train_on_windows(student, ids, kd_loss, "heal_with_kd", steps=steps, batch_size=batch_size,
                             seq_len=seq_len, lr=lr, params=params, seed=seed, amp=amp)


def fine_tune_lm(model: nn.Module, ids: torch.Tensor, *, steps: int, batch_size: int, seq_len: int, lr: float,
                 params=None, seed: int = 0, amp: str = "auto") -> dict:
    """Plain next-token fine-tuning (cross-entropy on the text's own tokens, no teacher): the control for
    ``heal_with_kd``. Same windows for the same ``seed``, same optimizer and schedule, so the two differ only in
    the target (the teacher's distribution or the one token that follows). Returns {"losses" (nats per token),
    "seconds", "tokens"}."""

    def ce_loss(x, device, dtype):
        with autocast_context(device, dtype):
            logits = model(input_ids=x, use_cache=False).logits
        return nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), x[:, 1:].flatten())

    return _train_on_windows(model, ids, ce_loss, "fine_tune_lm", steps=steps, batch_size=batch_size,
                             seq_len=seq_len, lr=lr, params=params, seed=seed, amp=amp)


def _train_on_windows(model: nn.Module, ids: torch.Tensor, loss_of, caller: str, *, steps: int, batch_size: int,
                      seq_len: int, lr: float, params, seed: int, amp: str) -> dict:
    """The loop both healings share: ``loss_of(x (batch, seq_len) ids, device, autocast dtype)`` -> scalar."""
    if steps < 1 or batch_size < 1 or seq_len < 2:
        raise ValueError(f"{caller}: steps, batch_size >= 1 and seq_len >= 2 are required")
    if len(ids) <= seq_len:
        raise ValueError(f"{caller}: the calibration text has {len(ids)} tokens, fewer than seq_len + 1")
    device = next(model.parameters()).device
    dtype = autocast_dtype(device, amp)
    params = list(model.parameters() if params is None else params)
    trainable = {id(p) for p in params}
    was_trainable = {id(p): p.requires_grad for p in model.parameters()}
    for p in model.parameters():
        p.requires_grad_(id(p) in trainable)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    losses = []
    start = time.perf_counter()
    cap = dry_run_steps()  # a dry run (COURSEKIT_DRY_RUN) checks configuration: a few steps only
    for _ in range(steps if cap is None else min(steps, cap)):
        begins = torch.randint(0, len(ids) - seq_len, (batch_size,), generator=gen)
        x = torch.stack([ids[b:b + seq_len] for b in begins.tolist()]).to(device)
        loss = loss_of(x, device, dtype)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    model.eval()
    for p in model.parameters():  # as they were before training
        p.requires_grad_(was_trainable[id(p)])
    return {"losses": losses, "seconds": time.perf_counter() - start, "tokens": steps * batch_size * seq_len}


# ----------------------------------------------------------------------------- speed and samples

def linear_macs_per_token(model: nn.Module) -> int:
    """Multiply-accumulates of all linear layers for one token (attention projections, MLP, lm_head): the cost a
    decode step pays per token apart from attending over the cache. Zeros count: sparse weights are still
    multiplied by a dense kernel. Quantized linear layers (``weightquant``'s, PyTorch's int8 ones) count the same
    products, at their own precision: any module with ``in_features`` and ``out_features`` and a weight."""
    return sum(m.in_features * m.out_features for m in model.modules()
               if isinstance(m, nn.Linear) or (hasattr(m, "in_features") and hasattr(m, "out_features")
                                               and (hasattr(m, "weight") or hasattr(m, "codes"))))


@torch.inference_mode()
def _decode_ms(model: nn.Module, prompt: torch.Tensor, new_tokens: int, dtype=None) -> tuple[float, float]:
    """(prefill ms for ``prompt`` (1, P), ms per generated token over ``new_tokens`` greedy steps with the cache),
    under autocast to ``dtype`` (None: float32)."""
    device = prompt.device
    with autocast_context(device, dtype):
        t0 = time.perf_counter()
        out = model(input_ids=prompt, use_cache=True)
        t1 = time.perf_counter()
        cache, tok = out.cache, out.logits[:, -1:].argmax(-1)
        for _ in range(new_tokens):
            out = model(input_ids=tok, cache=cache, use_cache=True)
            cache, tok = out.cache, out.logits[:, -1:].argmax(-1)
        t2 = time.perf_counter()
    return (t1 - t0) * 1e3, (t2 - t1) * 1e3 / new_tokens


def latency_prompt(prompt_len: int, vocab_low: int = 1000, vocab_high: int = 2000) -> torch.Tensor:
    """The fixed prompt every latency measurement of a language model uses: (1, ``prompt_len``) token ids drawn from
    [vocab_low, vocab_high) with seed 0, so that PyTorch and another runtime (llama.cpp) time the same tokens."""
    return torch.randint(vocab_low, vocab_high, (1, prompt_len), generator=torch.Generator().manual_seed(0))


def lm_latency(models: dict[str, nn.Module], *, prompt_len: int = 256, new_tokens: int = 32, rounds: int = 3,
               vocab_low: int = 1000, vocab_high: int = 2000, amp: str = "off") -> dict[str, dict]:
    """Prefill latency of one ``prompt_len``-token prompt and ms per generated token (greedy, KV cache on, batch 1)
    of several models, side by side in ``rounds`` interleaved rounds after one warm-up each, in float32
    (``amp="off"``) or under the autocast that ``amp`` resolves to here (the precision a perplexity was measured in:
    accuracy and cost of the same computation).
    Returns {name: {"prefill_ms", "decode_ms_per_token"} medians, plus "*_range" (min, max), "prompt_len",
    "precision"}."""
    prompt = latency_prompt(prompt_len, vocab_low, vocab_high)
    seen = {n: ([], []) for n in models}
    dtypes = {n: autocast_dtype(next(m.parameters()).device, amp) for n, m in models.items()}
    for n, m in models.items():
        m.eval()
        _decode_ms(m, prompt.to(next(m.parameters()).device), 2, dtypes[n])
    for _ in range(rounds):
        for n, m in models.items():
            p, d = _decode_ms(m, prompt.to(next(m.parameters()).device), new_tokens, dtypes[n])
            seen[n][0].append(p)
            seen[n][1].append(d)
    return {n: {"prefill_ms": statistics.median(p), "decode_ms_per_token": statistics.median(d), "prompt_len": prompt_len,
                "prefill_range": (min(p), max(p)), "decode_range": (min(d), max(d)),
                "precision": "float32" if dtypes[n] is None else f"{str(dtypes[n]).removeprefix('torch.')} autocast"}
            for n, (p, d) in seen.items()}


class _Captured(Exception):
    """Raised by the hook that catches the first decoder layer's inputs: the rest of the model need not run."""


@torch.no_grad()
def change_layers_in_order(model: nn.Module, ids: torch.Tensor, change, *, seq_len: int = 256) -> list:
    """The layer-by-layer scheme of GPTQ's and Wanda's reference code: the calibration tokens ``ids`` (T,) are run in
    windows of ``seq_len`` to the first decoder layer (its inputs and keyword arguments, e.g. the rotary position
    embeddings, caught once); then for each decoder layer in order, ``change(layer, inputs)`` changes the layer in
    place, given ``inputs``, the list of (hidden states, kwargs) that arrive from the layers already changed, and the
    changed layer's outputs become the next layer's inputs. Float32, no autocast. Returns each call's result."""
    integer("seq_len", seq_len, lo=2)
    if ids.numel() < 2:
        raise ValueError(f"ids: {ids.numel()} calibration tokens; at least 2 are needed")
    layers = decoder_layers(model)
    device = next(model.parameters()).device
    caught = []

    def catch(_module, args, kwargs):
        hidden = args[0] if args else kwargs.pop("hidden_states")
        caught.append((hidden, dict(kwargs)))
        raise _Captured

    hook = layers[0].register_forward_pre_hook(catch, with_kwargs=True)
    model.eval()
    try:
        for b in range(0, len(ids) - 1, seq_len):
            try:
                model(input_ids=ids[b:b + seq_len].unsqueeze(0).to(device), use_cache=False)
            except _Captured:
                pass
    finally:
        hook.remove()
    results = []
    for layer in layers:
        results.append(change(layer, caught))
        caught = [(first_output(layer(hidden, **kwargs)), kwargs) for hidden, kwargs in caught]
    return results


def gptq_decoder(model: nn.Module, ids: torch.Tensor, *, bits: int, group_size: int | None = None,
                 symmetric: bool = False, seq_len: int = 256, block_size: int = GPTQ_BLOCK,
                 damp: float = GPTQ_DAMP) -> dict:
    """GPTQ on every linear of ``model``'s decoder layers, in place, in the order of the paper's reference code
    (``change_layers_in_order``): each layer's Hessians X^T X are taken on the calibration tokens ``ids`` as they
    arrive through the layers already quantized, all of a layer's linears are quantized (``gptq.gptq_linears``), and
    the quantized layer's outputs feed the next. The output head (tied to the token embedding here) stays float.
    Returns the sums of ``gptq_linears``' counts over the layers."""
    def quantize_layer(layer, inputs):
        return gptq_linears(layer, lambda: [layer(h, **kw) for h, kw in inputs], bits=bits, group_size=group_size,
                            symmetric=symmetric, block_size=block_size, damp=damp)

    per_layer = change_layers_in_order(model, ids, quantize_layer, seq_len=seq_len)
    return {k: sum(r[k] for r in per_layer) for k in ("layers", "weights", "stored_bytes", "float_bytes")}


@torch.inference_mode()
def greedy_text(model: nn.Module, tokenizer, prompt: str, new_tokens: int = 30) -> str:
    """``model.generate`` greedily (cache on) from ``prompt``; returns the continuation only."""
    x = tokenizer(prompt, return_tensors="pt").to(next(model.parameters()).device)
    out = model.generate(**x, max_new_tokens=new_tokens, do_sample=False, use_cache=True,
                         pad_token_id=tokenizer.eos_token_id)
    return tokenizer.decode(out[0, x["input_ids"].shape[1]:], skip_special_tokens=True)
