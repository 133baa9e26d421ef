"""Distilling a text classifier (Part 2, notebooks/08_transformer_distillation.ipynb): the teacher's logits cached
once per sentence, hidden-state losses on aligned layers (DistilBERT, Sanh et al. 2019; TinyBERT, Jiao et al. 2019)
and a ``loss_fn`` for ``fit`` built on Hinton et al.'s ``kd_loss`` (``coursekit.kdloss``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .env import autocast_context, autocast_dtype
from .kdloss import kd_loss, validate_kd_args
from .textdata import TextBatches
from .validate import integer

__all__ = ["uniform_layer_map", "hidden_state_loss", "CachedTeacherLogits", "text_kd_loss_fn"]


def uniform_layer_map(student_layers: int, teacher_layers: int) -> dict[int, int]:
    """{student hidden index: teacher hidden index}, spread uniformly so that the last layers meet (TinyBERT's
    mapping, Jiao et al. 2019; index k is the output of layer k, 0 the embeddings): a 3-layer student of a 6-layer
    teacher gets {1: 2, 2: 4, 3: 6}. Notebook 08 uses it; its Exercise 2 builds it by hand."""
    integer("teacher_layers", teacher_layers, lo=1)
    integer("student_layers", student_layers, lo=1, hi=teacher_layers)
    return {k: k * teacher_layers // student_layers for k in range(1, student_layers + 1)}


def hidden_state_loss(student_hidden, teacher_hidden, mask: torch.Tensor, layer_map: dict[int, int],
                      kind: str = "cosine") -> torch.Tensor:
    """Pull the student's hidden states towards the teacher's on aligned layers (DistilBERT: cosine on the last
    layer, Sanh et al. 2019; TinyBERT: MSE on every mapped layer, Jiao et al. 2019).

    Args:
        student_hidden, teacher_hidden: tuples of (N, L, H) tensors, index 0 = embeddings output (as returned with
            ``output_hidden_states=True``); both models must share the hidden size H.
        mask: (N, L) 1 for real tokens, 0 for padding (padding positions are ignored).
        layer_map: {student index: teacher index}, e.g. {1: 2, 2: 4, 3: 6} for a 3-layer student of a 6-layer teacher.
        kind: "cosine" (mean of 1 - cos over tokens) or "mse" (mean squared error per element over tokens).
    Returns:
        scalar, averaged over the mapped layers.
    """
    if kind not in ("cosine", "mse"):
        raise ValueError(f"kind: {kind!r} is not allowed; use cosine, mse")
    if not layer_map:
        raise ValueError("layer_map: give at least one {student layer: teacher layer} pair")
    m = mask.bool()
    losses = []
    for s_i, t_i in layer_map.items():
        s = student_hidden[s_i][m].float()  # (tokens, H)
        t = teacher_hidden[t_i][m].detach().float()
        if kind == "cosine":
            losses.append((1 - F.cosine_similarity(s, t, dim=-1)).mean())
        else:
            losses.append(F.mse_loss(s, t))
    return torch.stack(losses).mean()


class CachedTeacherLogits:
    """What the teacher says about every sentence of a training split, computed once (eval mode, no dropout) and
    looked up by the sentence's token ids: KD without a teacher forward pass per step, valid because text batches
    are not augmented (the same sentence always gives the teacher the same input).

    ``cached(x)`` maps a padded batch (N, L) to the teacher's logits (N, C), whatever the batch order and padding.
    With ``hidden_layers`` (teacher hidden-state indices, 0 = embeddings), their states are kept too, in bf16
    (about 2 * tokens * H bytes per layer), and ``cached.hidden(x)`` returns {layer: (N, L, H)} (zeros at padding).
    """

    def __init__(self, teacher: nn.Module, split, pad_id: int, batch_size: int = 128, amp: str = "auto",
                 hidden_layers=()):

        self.pad_id, self.hidden_layers = pad_id, tuple(hidden_layers)
        device = next(teacher.parameters()).device
        dtype = autocast_dtype(device, amp)
        batches = TextBatches(split, batch_size, pad_id=pad_id, device=device)  # sorted by length, in order
        order = torch.argsort(split.lengths(), stable=True).tolist()
        self.table, self.states = {}, {}
        teacher.eval()
        k = 0
        with torch.inference_mode(), autocast_context(device, dtype):
            for x, _ in batches:
                if self.hidden_layers:
                    logits, hidden, _ = teacher.forward_with_hidden(x)
                else:
                    logits, hidden = teacher(x), None
                for row in range(len(x)):
                    ids = split.ids[order[k]]
                    key = tuple(ids.tolist())
                    self.table[key] = logits[row].float().cpu()
                    if hidden is not None:
                        self.states[key] = {t: hidden[t][row, : len(ids)].to(torch.bfloat16).cpu()
                                            for t in self.hidden_layers}
                    k += 1

    def _keys(self, x: torch.Tensor) -> list[tuple]:
        rows = [tuple(r[r != self.pad_id].tolist()) for r in x.cpu()]
        missing = sum(r not in self.table for r in rows)
        if missing:
            raise KeyError(f"{missing} sentence(s) of this batch are not in the cached split: cache the split you train on")
        return rows

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.table[r] for r in self._keys(x)]).to(x.device)

    def hidden(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        """{teacher layer: (N, L, H) float32} for the batch ``x`` (padding positions are zeros)."""
        if not self.hidden_layers:
            raise ValueError("no hidden states were cached: pass hidden_layers=... when building the cache")
        keys = self._keys(x)
        out = {}
        for t in self.hidden_layers:
            h = torch.zeros(x.shape[0], x.shape[1], self.states[keys[0]][t].shape[-1])
            for i, key in enumerate(keys):
                h[i, : len(self.states[key][t])] = self.states[key][t].float()
            out[t] = h.to(x.device)
        return out


def text_kd_loss_fn(teacher_logits, temperature: float = 2.0, alpha: float = 0.9, *, teacher: nn.Module | None = None,
                    hidden_weight: float = 0.0, layer_map: dict[int, int] | None = None, hidden_kind: str = "cosine"):
    """A ``loss_fn(model, x, y)`` for ``fit`` that distils a text classifier with ``kdloss.kd_loss``.

    teacher_logits: a ``CachedTeacherLogits`` (or any callable x -> (N, C)).
    hidden_weight > 0 adds ``hidden_weight * hidden_state_loss`` on ``layer_map`` {student layer: teacher layer};
    the teacher's hidden states come from the cache when it holds those layers, else ``teacher`` (a
    TextClassifier) runs on every batch under inference_mode.
    """
    validate_kd_args(temperature, alpha)
    cached_hidden = bool(layer_map) and set(layer_map.values()) <= set(getattr(teacher_logits, "hidden_layers", ()))
    if hidden_weight and (not layer_map or (teacher is None and not cached_hidden)):
        raise ValueError("hidden_weight > 0 needs a layer_map and the teacher's hidden states: a cache built with "
                         "those hidden_layers, or the teacher model")

    def loss_fn(model, x, y):
        if hidden_weight:
            if cached_hidden:
                t_hidden = teacher_logits.hidden(x)
            else:
                teacher.eval()
                with torch.inference_mode():
                    _, t_hidden, _ = teacher.forward_with_hidden(x)
                t_hidden = tuple(h.clone() for h in t_hidden)
            s_logits, s_hidden, mask = model.forward_with_hidden(x)
        else:
            s_logits = model(x)
        loss = kd_loss(s_logits, teacher_logits(x), y, temperature, alpha)
        if hidden_weight:
            loss = loss + hidden_weight * hidden_state_loss(s_hidden, t_hidden, mask, layer_map, hidden_kind)
        return loss, s_logits

    return loss_fn
