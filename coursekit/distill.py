"""Knowledge distillation (Hinton, Vinyals & Dean 2015) and feature hints (FitNets, Romero et al. 2015).

The student minimises
    (1 - alpha) * CE(y, softmax(z_s)) + alpha * T^2 * KL(softmax(z_t / T) || softmax(z_s / T)),
where z_s, z_t are student and teacher logits and T the temperature. The soft
term's gradients scale as 1/T^2, hence the T^2 factor that keeps the two terms
balanced whatever T is. Introduced in notebooks/02_knowledge_distillation.ipynb.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn

from .env import autocast_context, autocast_dtype
from .metrics import count_params
from .models import model_from_spec
from .textdata import TextBatches
from .train import decay_groups, fit
from .validate import integer, number

__all__ = ["validate_kd_args", "soft_targets", "kd_loss", "kd_loss_fn", "validate_teacher_student", "FeatureHint",
           "train_student", "uniform_layer_map", "hidden_state_loss", "CachedTeacherLogits", "text_kd_loss_fn"]


def validate_kd_args(temperature: float, alpha: float) -> None:
    """Refuse a temperature that is not a number > 0, or an alpha outside [0, 1], before any work (the notebooks
    call this on their parameters)."""
    number("temperature", temperature, lo=0, lo_open=True, allowed="a number > 0 (typically 1 to 8)")
    number("alpha", alpha, lo=0, hi=1)


def soft_targets(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """softmax(logits / T) over the last dimension: (N, C) -> (N, C). T > 1 softens, T = 1 is the plain softmax."""
    validate_kd_args(temperature, 0.0)
    return F.softmax(logits.float() / temperature, dim=-1)


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor,
            temperature: float = 4.0, alpha: float = 0.9, label_smoothing: float = 0.0) -> torch.Tensor:
    """Hinton et al. 2015 distillation loss, averaged over the batch.

    Args:
        student_logits, teacher_logits: (N, C) logits (the teacher's are detached here).
        targets: (N,) class indices for the hard cross-entropy term.
        temperature: T > 0 softening both distributions.
        alpha: weight of the soft term in [0, 1]; alpha = 0 is plain cross-entropy.
    Returns:
        scalar: (1 - alpha) * CE + alpha * T^2 * KL(p_teacher^T || p_student^T).
    """
    validate_kd_args(temperature, alpha)
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student logits {tuple(student_logits.shape)} and teacher logits "
                         f"{tuple(teacher_logits.shape)} differ: teacher and student must predict the same classes")
    s = student_logits.float()
    hard = F.cross_entropy(s, targets, label_smoothing=label_smoothing)
    if alpha == 0:
        return hard
    log_p_student = F.log_softmax(s / temperature, dim=-1)  # kl_div wants log-probabilities as input
    p_teacher = F.softmax(teacher_logits.detach().float() / temperature, dim=-1)  # ... and probabilities as target
    soft = F.kl_div(log_p_student, p_teacher, reduction="batchmean") * temperature**2
    return (1 - alpha) * hard + alpha * soft


def validate_teacher_student(teacher: nn.Module, student: nn.Module, input_size=(3, 32, 32)) -> None:
    """Raise when teacher and student predict different numbers of classes; warn when the student is not smaller."""
    device = next(teacher.parameters()).device
    x = torch.zeros(2, *input_size, device=device)
    was = teacher.training, student.training
    teacher.eval()
    student.eval()
    with torch.no_grad():
        ct = teacher(x).shape[-1]
        cs = student.to(device)(x).shape[-1]
    teacher.train(was[0])
    student.train(was[1])
    if ct != cs:
        raise ValueError(f"teacher predicts {ct} classes but the student {cs}: distillation needs the same classes")
    pt, ps = count_params(teacher), count_params(student)
    if ps >= pt:
        warnings.warn(f"the student has {ps:,} parameters, not fewer than the teacher's {pt:,}: nothing is compressed",
                      stacklevel=2)


def kd_loss_fn(teacher: nn.Module, temperature: float = 4.0, alpha: float = 0.9, label_smoothing: float = 0.0,
               hint: FeatureHint | None = None, hint_weight: float = 1.0, teacher_channels_last: bool = True):
    """A ``loss_fn(model, x, y) -> (loss, logits)`` for ``coursekit.train.fit`` that distils ``teacher``.

    The teacher runs in eval mode (its BatchNorm uses running statistics) under
    inference_mode on the very batch the student sees, augmentation included;
    it is never updated. It runs in channels_last (faster convolutions) whatever
    layout the student uses, and under the autocast that ``fit`` sets up (bf16 on GPU).
    With ``hint``, ``hint_weight * hint.loss()`` is added.
    """
    validate_kd_args(temperature, alpha)
    teacher.eval()  # its parameters keep requires_grad: inference_mode below is what keeps gradients away,
    # and a copy of the teacher made later (to prune or trim it) must still be trainable
    fmt = torch.channels_last if teacher_channels_last else torch.contiguous_format
    teacher.to(memory_format=fmt)

    def loss_fn(model, x, y):
        if teacher.training:
            teacher.eval()  # fit() puts the student in train mode each epoch, never the teacher
        with torch.inference_mode():
            t_logits = teacher(x.contiguous(memory_format=fmt))
        t_logits = t_logits.clone()  # an inference tensor cannot enter autograd; a clone can
        s_logits = model(x)
        loss = kd_loss(s_logits, t_logits, y, temperature, alpha, label_smoothing)
        if hint is not None:
            loss = loss + hint_weight * hint.loss()
        return loss, s_logits

    return loss_fn


class FeatureHint(nn.Module):
    """FitNets-style hint (Romero et al. 2015): match a student stage's features to a teacher stage's.

    Forward hooks capture the outputs of ``student_layer`` (N, Cs, H, W) and
    ``teacher_layer`` (N, Ct, H', W'); a learned 1x1 conv adapter maps Cs -> Ct
    (and the student map is resized to H' x W' when they differ), and ``loss()``
    is the mean squared error between adapted student and teacher features.
    The adapter's parameters must be trained with the student's.
    """

    def __init__(self, student: nn.Module, teacher: nn.Module, student_layer: str, teacher_layer: str,
                 input_size=(3, 32, 32)):
        super().__init__()
        s_mod = dict(student.named_modules()).get(student_layer)
        t_mod = dict(teacher.named_modules()).get(teacher_layer)
        if s_mod is None:
            raise ValueError(f"student_layer: no module {student_layer!r} in the student")
        if t_mod is None:
            raise ValueError(f"teacher_layer: no module {teacher_layer!r} in the teacher")
        self._feats: dict[str, torch.Tensor] = {}
        s_mod.register_forward_hook(lambda m, i, o: self._feats.__setitem__("s", o))
        t_mod.register_forward_hook(lambda m, i, o: self._feats.__setitem__("t", o))
        device = next(teacher.parameters()).device
        with torch.no_grad():
            x = torch.zeros(1, *input_size, device=device)
            teacher.eval()(x)
            was = student.training
            student.to(device).eval()(x)
            student.train(was)
        cs, ct = self._feats["s"].shape[1], self._feats["t"].shape[1]
        self.adapter = nn.Conv2d(cs, ct, 1, bias=False).to(device)

    def loss(self) -> torch.Tensor:
        s = self.adapter(self._feats["s"])
        t = self._feats["t"].detach().clone().float()
        if s.shape[-2:] != t.shape[-2:]:
            s = F.adaptive_avg_pool2d(s, t.shape[-2:])
        return F.mse_loss(s.float(), t)


def train_student(spec: dict, train_batches, *, epochs: int, lr: float, seed: int, teacher: nn.Module | None = None,
                  temperature: float = 4.0, alpha: float = 0.9, hint_layers: tuple[str, str] | None = None,
                  hint_weight: float = 1.0, device="cpu", input_size=(3, 32, 32), **fit_kwargs):
    """Build the student of ``spec`` with ``seed`` and train it alone (teacher None) or distilled.

    hint_layers: (student_layer, teacher_layer) adds a FitNets hint on those stages.
    Returns (student in eval mode, history from ``fit``). Same seed, same init and
    batch order, so a scratch and a distilled student differ only in the loss.
    """

    torch.manual_seed(seed)
    student = model_from_spec(spec).to(device)
    loss_fn, params = None, None
    if teacher is not None:
        validate_teacher_student(teacher, student, input_size)
        hint = None
        if hint_layers is not None:
            hint = FeatureHint(student, teacher, *hint_layers, input_size=input_size)
            params = decay_groups(list(student.parameters()) + list(hint.parameters()),
                                  fit_kwargs.get("weight_decay", 5e-4))
        loss_fn = kd_loss_fn(teacher, temperature, alpha, fit_kwargs.get("label_smoothing", 0.0), hint, hint_weight)
    history = fit(student, train_batches, epochs=epochs, lr=lr, loss_fn=loss_fn, params=params, device=device,
                  **fit_kwargs)
    return student.eval(), history


# ----------------------------------------------------------------------------- transformers (Part 2)

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
        raise ValueError(f"kind: unknown value {kind!r}; allowed: cosine, mse")
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
    """A ``loss_fn(model, x, y)`` for ``fit`` that distils a text classifier with Part 1's ``kd_loss``.

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
