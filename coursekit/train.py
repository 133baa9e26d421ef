"""Training and evaluation: ``fit``, ``evaluate`` and ``predict_logits`` (the model cache: ``coursekit.modelcache``).

``fit`` trains with SGD (Nesterov) or AdamW under a OneCycle or cosine
schedule, optional label smoothing (Szegedy et al. 2016), autocast (bf16/fp16)
and channels_last, with a tqdm progress bar, and returns a history. A custom
``loss_fn(model, x, y) -> (loss, logits)`` plugs other objectives in (the
distillation chapter uses it). Introduced in notebooks/00_baseline.ipynb.
"""

from __future__ import annotations

import math
import os
import time
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from .distributed import shard_of_batch, world, wrap_for_training
from .env import autocast_context, autocast_dtype
from .runsettings import dry_run_steps
from .validate import fraction, integer

__all__ = [
    "fit",
    "evaluate",
    "predict_logits",
    "FlipTTA",
    "lr_factor",
    "decay_groups",
    "channels_last_is_safe",
    "OPTIMIZERS",
    "SCHEDULES",
]

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("onecycle", "cosine")


def _validate_fit_args(epochs, lr, optimizer, schedule, label_smoothing, weight_decay):
    integer("epochs", epochs, lo=1)
    if not lr > 0:
        raise ValueError(f"lr: {lr!r} is not allowed; use a positive number")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer: {optimizer!r} is not allowed; use {', '.join(OPTIMIZERS)}")
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule: {schedule!r} is not allowed; use {', '.join(SCHEDULES)}")
    fraction("label_smoothing", label_smoothing)
    if weight_decay < 0:
        raise ValueError(f"weight_decay: {weight_decay!r} is not allowed; use a number >= 0")


def lr_factor(step: int, total_steps: int, schedule: str = "onecycle", warmup: float = 0.25) -> float:
    """Multiplier of the peak learning rate at ``step`` of ``total_steps``.

    "onecycle" (Smith & Topin 2019, piecewise-linear as in airbench): 0.1 -> 1 over the
    first ``warmup`` share of the steps, then 1 -> 0.001. "cosine" (Loshchilov &
    Hutter 2017): 1 -> 0 along half a cosine. Defined for any number of steps,
    one included (torch's OneCycleLR divides by zero below a few steps).
    """
    t = min(step, total_steps) / max(total_steps, 1)
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * t))
    if t < warmup:
        return 0.1 + 0.9 * t / warmup
    return 1.0 - 0.999 * (t - warmup) / (1 - warmup)


def channels_last_is_safe(model: nn.Module, device: torch.device | str) -> bool:
    """False on CPU when a convolution is small enough to hit a oneDNN bug in channels_last training.

    Seen with torch 2.14.1 on 2-core machines: the weight gradient of 1x1 convolutions in channels_last
    can hang with 4-channel tensors (AVX2), and the backward pass of a strided 1x1 convolution (a ResNet
    projection shortcut) with fewer than 16 input channels corrupts memory and kills the process when the
    batch is not a multiple of 8 (AVX-512; 16 and 24 channels were fine). Such tiny layers gain nothing
    from channels_last anyway, so these models train in NCHW.
    """
    if torch.device(device).type != "cpu":
        return True
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.in_channels > 3]  # the RGB stem is fine
    tiny = any(min(m.in_channels, m.out_channels) < 8 for m in convs)
    strided_1x1 = any(m.kernel_size == (1, 1) and m.stride != (1, 1) and m.in_channels < 16 for m in convs)
    return not (tiny or strided_1x1)


def decay_groups(parameters, weight_decay: float) -> list[dict]:
    """Two optimizer groups of the trainable ``parameters``: weights (ndim > 1) with ``weight_decay``,
    biases and norm scales without (decaying them only hurts)."""
    trainable = [p for p in parameters if p.requires_grad]
    return [{"params": [p for p in trainable if p.ndim > 1], "weight_decay": weight_decay},
            {"params": [p for p in trainable if p.ndim <= 1], "weight_decay": 0.0}]


def fit(
    model: nn.Module,
    train_batches,
    *,
    epochs: int,
    lr: float,
    optimizer: str = "sgd",
    schedule: str = "onecycle",
    weight_decay: float = 5e-4,
    label_smoothing: float = 0.0,
    amp: str = "auto",
    channels_last: bool = True,
    val_batches=None,
    loss_fn=None,
    params=None,
    device: torch.device | str | None = None,
    progress: bool = True,
    log_dir: str | os.PathLike | None = None,
    on_step=None,
) -> dict:
    """Train ``model`` in place and return its history.

    Args:
        model: any classifier (N, 3, H, W) -> (N, classes); moved to ``device``.
        train_batches: an iterable of (x, y) batches with ``len()`` (``coursekit.data.Batches``).
        epochs, lr: schedule length and peak learning rate.
        optimizer: "sgd" (momentum 0.9, Nesterov) or "adamw".
        schedule: "onecycle" or "cosine" (see ``lr_factor``), stepped per batch.
        weight_decay: L2 on weights (not on BatchNorm parameters and biases).
        label_smoothing: epsilon of label-smoothed cross-entropy.
        amp: "auto", "bf16", "fp16" or "off" (see ``coursekit.env.autocast_dtype``).
        val_batches: evaluated after every epoch when given (never the test split).
        loss_fn: ``loss_fn(model, x, y) -> (loss, logits)``; default label-smoothed CE.
        params: parameter groups for the optimizer (e.g. per-stage lr); default: all
            trainable parameters with decay on weights only.
        log_dir: when given, TensorBoard event files are written there: the model's graph (traced once on the
            first batch, in eval mode so that BatchNorm statistics are not touched), the training loss every 20
            steps ("train_loss_step") and, per epoch, train_loss, train_acc, val_acc and lr.
        on_step: ``on_step(step, total_steps, model)`` called after every optimizer step
            (1-based step), e.g. ``coursekit.prune.AGPSchedule`` raising the sparsity.

    Under ``torchrun`` (process group initialised, e.g. by ``coursekit.distributed.init_distributed``) the model is
    wrapped in DistributedDataParallel and each process trains on its slice of every batch: the same steps as one
    process on the whole batch. Only rank 0 shows progress and writes TensorBoard logs.
    In a dry run ($COURSEKIT_DRY_RUN=N, ``coursekit.runsettings.dry_run_steps``) training stops after N optimizer steps.
    Returns:
        {"epoch", "train_loss", "train_acc", "val_acc", "lr", "time_s"}: lists, one entry per epoch trained.
    """
    _validate_fit_args(epochs, lr, optimizer, schedule, label_smoothing, weight_decay)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.to(device)
    channels_last = channels_last and channels_last_is_safe(model, device)
    model.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    dtype = autocast_dtype(device, amp)
    if params is None:
        params = decay_groups(model.parameters(), weight_decay)
    if optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True)
    else:
        opt = torch.optim.AdamW(params, lr=lr)
    steps = epochs * len(train_batches)
    max_steps = dry_run_steps()  # a dry run (COURSEKIT_DRY_RUN) checks configuration: a few steps, then it stops
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, steps, schedule))
    scaler = torch.amp.GradScaler(device.type, enabled=(dtype == torch.float16))
    if loss_fn is None:
        def loss_fn(m, x, y):
            logits = m(x)
            return F.cross_entropy(logits.float(), y, label_smoothing=label_smoothing), logits

    rank, world_size = world()  # under torchrun: DDP, each process on its slice of every batch (coursekit.distributed)
    trainer = wrap_for_training(model)
    progress = progress and rank == 0
    writer = None
    if log_dir is not None and rank == 0:
        try:
            from torch.utils.tensorboard import SummaryWriter  # optional extra: tensorboard
        except ImportError as err:
            raise ImportError("log_dir: logging to TensorBoard needs the optional extra; "
                              "pip install -e \".[tensorboard]\" (or leave log_dir=None)") from err
        writer = SummaryWriter(str(log_dir))
    from tqdm.auto import tqdm

    history = {"epoch": [], "train_loss": [], "train_acc": [], "val_acc": [], "lr": [], "time_s": []}
    start = time.perf_counter()
    bar = tqdm(total=steps, disable=not progress, desc="train", leave=True)
    step = 0
    for epoch in range(1, epochs + 1):
        if max_steps is not None and step >= max_steps:
            break
        model.train()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device)
        seen = 0
        for x, y in train_batches:
            if max_steps is not None and step >= max_steps:
                break
            if world_size > 1:
                x, y = shard_of_batch(x, y)
            if not channels_last:
                x = x.contiguous()
            if writer is not None and step == 0:
                _log_graph(writer, model, x[:1])
            with autocast_context(device, dtype):
                loss, logits = loss_fn(trainer, x, y)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            sched.step()
            step += 1
            if on_step is not None:
                on_step(step, steps, model)
            loss_sum += loss.detach() * len(y)
            correct += (logits.detach().argmax(1) == y).sum()
            seen += len(y)
            bar.update(1)
            if step % 20 == 0 or step == steps:  # reading the loss syncs the device: not every step
                bar.set_postfix(epoch=epoch, loss=f"{loss_sum.item() / seen:.3f}", acc=f"{correct.item() / seen:.3f}")
                if writer is not None:
                    writer.add_scalar("train_loss_step", loss.item(), step)
        if world_size > 1:  # the epoch's loss and accuracy over every process's slices
            totals = torch.stack([loss_sum.float(), correct.float(), torch.tensor(float(seen), device=device)])
            torch.distributed.all_reduce(totals)
            loss_sum, correct, seen = totals[0], totals[1], int(totals[2].item())
        history["epoch"].append(epoch)
        history["train_loss"].append(loss_sum.item() / max(seen, 1))
        history["train_acc"].append(correct.item() / max(seen, 1))
        history["lr"].append(opt.param_groups[0]["lr"])
        history["val_acc"].append(evaluate(model, val_batches, amp=amp)["accuracy"] if val_batches is not None else None)
        history["time_s"].append(time.perf_counter() - start)
        if progress:  # a plain line per epoch: the log that stays readable in saved notebooks
            val = "" if history["val_acc"][-1] is None else f"  val acc {history['val_acc'][-1]:.2%}"
            bar.write(f"epoch {epoch}/{epochs}  loss {history['train_loss'][-1]:.3f}  "
                      f"train acc {history['train_acc'][-1]:.2%}{val}  {history['time_s'][-1]:.0f} s")
        if writer is not None:
            for k in ("train_loss", "train_acc", "val_acc", "lr"):
                if history[k][-1] is not None:
                    writer.add_scalar(k, history[k][-1], epoch)
    bar.close()
    if writer is not None:
        writer.close()
    return history


def _log_graph(writer, model: nn.Module, example: torch.Tensor) -> None:
    """Write ``model``'s graph, traced on ``example`` (1, 3, H, W), to TensorBoard; eval mode and no_grad, so the
    trace changes neither BatchNorm statistics nor gradients."""
    was_training = model.training
    model.eval()
    with torch.no_grad(), warnings.catch_warnings():  # add_graph traces with torch.jit.trace, deprecated in torch 2.x
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.trace", category=FutureWarning)
        writer.add_graph(model, example.float())
    model.train(was_training)


class FlipTTA(nn.Module):
    """Flip test-time augmentation as a model: logits (N, C) = mean of ``model(x)`` and ``model(x.flip(3))`` for
    images x (N, C, H, W). Two forward passes per image, so time it (``measure_latency``) to see its cost."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * (self.model(x).float() + self.model(x.flip(3)).float())


@torch.inference_mode()
def predict_logits(model: nn.Module, batches, *, amp: str = "auto", tta: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (N, classes) float32 and labels (N,) over ``batches``, model in eval mode.

    tta=True averages the logits of each image and its horizontal mirror (``FlipTTA``: twice the forward passes).
    """
    was_training = model.training
    model.eval()
    # a quantized model (PyTorch's int8 modules) keeps its weights in packed form, with no parameters: the CPU
    device = next(iter(model.parameters()), torch.empty(0)).device
    dtype = autocast_dtype(device, amp)
    forward = FlipTTA(model) if tta else model
    outs, ys = [], []
    for x, y in batches:
        with autocast_context(device, dtype):
            logits = forward(x).float()
        outs.append(logits)
        ys.append(y)
    model.train(was_training)
    return torch.cat(outs), torch.cat(ys)


def evaluate(model: nn.Module, batches, *, amp: str = "auto", tta: bool = False) -> dict:
    """Accuracy (0..1) and mean cross-entropy of ``model`` on ``batches`` (eval mode, no gradients)."""
    logits, y = predict_logits(model, batches, amp=amp, tta=tta)
    return {
        "accuracy": (logits.argmax(1) == y).float().mean().item(),
        "loss": F.cross_entropy(logits, y).item(),
        "n": len(y),
    }
