"""The distillation loss of Hinton, Vinyals & Dean (2015), shared by both parts.

The student minimises
    (1 - alpha) * CE(y, softmax(z_s)) + alpha * T^2 * KL(softmax(z_t / T) || softmax(z_s / T)),
where z_s, z_t are student and teacher logits and T the temperature. The soft term's gradients scale as 1/T^2,
hence the T^2 factor that keeps the two terms balanced whatever T is. Part 1 (``coursekit.distill``, images) and
Part 2 (``coursekit.textdistill``, text) build their training losses on it. Introduced in
notebooks/02_knowledge_distillation.ipynb.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .validate import number

__all__ = ["validate_kd_args", "soft_targets", "kd_loss"]


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
