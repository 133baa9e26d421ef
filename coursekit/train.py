"""Training and evaluation: ``fit``, ``evaluate``, checkpoints and a run-dir model cache.

``fit`` trains with SGD (Nesterov) or AdamW under a OneCycle or cosine
schedule, optional label smoothing (Szegedy et al. 2016), autocast (bf16/fp16)
and channels_last, with a tqdm progress bar, and returns a history. A custom
``loss_fn(model, x, y) -> (loss, logits)`` plugs other objectives in (the
distillation chapter uses it). Introduced in notebooks/00_baseline.ipynb.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .distributed import shard_of_batch, world, wrap_for_training
from .env import autocast_dtype
from .files import save_torch_atomic
from .models import model_from_spec, removed_modules, reshape_to_state_dict

__all__ = [
    "fit",
    "evaluate",
    "predict_logits",
    "save_checkpoint",
    "load_checkpoint",
    "outputs_match_in_fresh_process",
    "train_or_load",
    "config_key",
    "lr_factor",
    "decay_groups",
    "channels_last_is_safe",
    "OPTIMIZERS",
    "SCHEDULES",
]

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("onecycle", "cosine")


def _autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def _check_fit_args(epochs, lr, optimizer, schedule, label_smoothing, weight_decay):
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
        raise ValueError(f"epochs: {epochs!r} is not allowed; use an integer >= 1")
    if not lr > 0:
        raise ValueError(f"lr: {lr!r} is not allowed; use a positive number")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer: unknown value {optimizer!r}; allowed: {', '.join(OPTIMIZERS)}")
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule: unknown value {schedule!r}; allowed: {', '.join(SCHEDULES)}")
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing: {label_smoothing!r} is outside the allowed range [0, 1)")
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
        log_dir: when given, scalars are written there for TensorBoard.
        on_step: ``on_step(step, total_steps, model)`` called after every optimizer step
            (1-based step), e.g. ``coursekit.prune.AGPSchedule`` raising the sparsity.

    Under ``torchrun`` (process group initialised, e.g. by ``coursekit.distributed.init_distributed``) the model is
    wrapped in DistributedDataParallel and each process trains on its slice of every batch: the same steps as one
    process on the whole batch. Only rank 0 shows progress and writes TensorBoard logs.
    Returns:
        {"epoch", "train_loss", "train_acc", "val_acc", "lr", "time_s"}: lists, one entry per epoch.
    """
    _check_fit_args(epochs, lr, optimizer, schedule, label_smoothing, weight_decay)
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
        model.train()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device)
        seen = 0
        for x, y in train_batches:
            if world_size > 1:
                x, y = shard_of_batch(x, y)
            if not channels_last:
                x = x.contiguous()
            with _autocast(device, dtype):
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


@torch.inference_mode()
def predict_logits(model: nn.Module, batches, *, amp: str = "auto", tta: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (N, classes) float32 and labels (N,) over ``batches``, model in eval mode.

    tta=True averages the logits of each image and its horizontal mirror.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    dtype = autocast_dtype(device, amp)
    outs, ys = [], []
    for x, y in batches:
        with _autocast(device, dtype):
            logits = model(x).float()
            if tta:
                logits = 0.5 * (logits + model(x.flip(3)).float())
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


# ----------------------------------------------------------------------------- checkpoints

def save_checkpoint(path: str | os.PathLike, model: nn.Module, spec: dict, config: dict | None = None,
                    metrics: dict | None = None) -> Path:
    """Save weights with what is needed to rebuild the model.

    spec: ``build_model`` arguments, e.g. {"name": "resnet_cifar", "num_classes": 10, "width": 32}.
    A model changed after it was built (channels pruned, blocks removed) is saved as it is: the
    tensor shapes in the state dict and the names of modules replaced by ``nn.Identity`` are its
    architecture, and ``load_checkpoint`` rebuilds exactly that. Pruning masks must be made
    permanent first (``coursekit.prune.make_permanent``).
    config: the training config (plain JSON-able values). Written atomically, by the main process only.
    """
    masked = [k for k in model.state_dict() if k.endswith("_mask")]
    if masked:
        raise ValueError(f"model still has pruning masks ({masked[0]}, ...): call coursekit.prune.make_permanent(model) "
                         "before saving, so the checkpoint holds ordinary weights")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    payload = {"spec": json.loads(json.dumps(spec)), "config": json.loads(json.dumps(config or {})),
               "metrics": json.loads(json.dumps(metrics or {})), "state_dict": state,
               "removed": removed_modules(model, spec)}
    return save_torch_atomic(payload, path)


def load_checkpoint(path: str | os.PathLike, device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the model saved by ``save_checkpoint`` (torch.load with weights_only=True).

    Returns (model in eval mode on ``device``, {"spec", "config", "metrics"}).
    """
    payload = torch.load(Path(path), map_location="cpu", weights_only=True)
    model = model_from_spec(payload["spec"])
    reshape_to_state_dict(model, payload["state_dict"], payload.get("removed", []))
    model.load_state_dict(payload["state_dict"])
    model.to(device).eval()
    return model, {k: payload[k] for k in ("spec", "config", "metrics")}


def config_key(config: dict) -> str:
    """A short stable hash of a JSON-able config: same config, same key."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]


def train_or_load(run_dir: str | os.PathLike, name: str, config: dict, train_fn, device="cpu") -> tuple[nn.Module, dict, bool]:
    """Reuse the model trained with ``config`` in ``run_dir``, or train and save it.

    The checkpoint lives at ``<run_dir>/checkpoints/<name>-<config_key>.pt``;
    ``config`` must hold everything that determines the weights (model spec
    under "spec", data, schedule, seed). ``train_fn()`` returns
    (model, metrics) and is called only on a cache miss.
    Returns (model, info, reused) where info holds "spec", "config", "metrics".
    """
    if "spec" not in config:
        raise ValueError("config must hold the model's build arguments under 'spec'")
    path = Path(run_dir) / "checkpoints" / f"{name}-{config_key(config)}.pt"
    if path.exists():
        model, info = load_checkpoint(path, device)
        return model, info, True
    model, metrics = train_fn()
    save_checkpoint(path, model, config["spec"], config, metrics)
    model.to(memory_format=torch.contiguous_format)  # as a loaded one would be
    return model.to(device).eval(), {"spec": config["spec"], "config": config, "metrics": metrics}, False


def outputs_match_in_fresh_process(path: str | os.PathLike, model: nn.Module, x: torch.Tensor) -> bool:
    """Load the checkpoint at ``path`` in a new Python process and compare its outputs on ``x`` with
    ``model``'s (on the CPU, eval mode, exact equality). Proves that the checkpoint alone rebuilds the model."""
    import copy
    import subprocess
    import sys
    import tempfile

    model = copy.deepcopy(model).cpu().eval().to(memory_format=torch.contiguous_format)  # as load_checkpoint builds it
    with torch.no_grad():
        y = model(x.cpu())
    with tempfile.TemporaryDirectory() as tmp:
        io_path = Path(tmp) / "io.pt"
        torch.save({"x": x.cpu(), "y": y}, io_path)
        code = ("import sys, torch; from coursekit.train import load_checkpoint; "
                f"m, _ = load_checkpoint({str(path)!r}); d = torch.load({str(io_path)!r}, weights_only=True); "
                "sys.exit(0 if torch.equal(m(d['x']), d['y']) else 3)")
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if done.returncode not in (0, 3):
        raise RuntimeError(f"loading {path} in a fresh process failed:\n{done.stderr[-2000:]}")
    return done.returncode == 0
