"""Knowledge distillation of image models (Part 1): Hinton et al.'s loss (``coursekit.kdloss``) with a live teacher,
feature hints (FitNets, Romero et al. 2015) and a student trained with or without them.
Introduced in notebooks/02_knowledge_distillation.ipynb; text distillation is ``coursekit.textdistill``.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn

from .kdloss import kd_loss, soft_targets, validate_kd_args  # noqa: F401  (re-exported: 02 imports them here)
from .metrics import count_params
from .models import model_from_spec
from .train import decay_groups, fit

__all__ = ["validate_kd_args", "soft_targets", "kd_loss", "kd_loss_fn", "validate_teacher_student", "FeatureHint",
           "train_student"]


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
