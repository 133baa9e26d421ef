"""Checkpoints of Part 1's image models that rebuild their architecture, and their run-dir cache.

``save_checkpoint`` stores the build spec, the state dict and which blocks a trimmed model lost; ``load_checkpoint``
rebuilds exactly that architecture (``reshape_to_state_dict``: pruned channel counts come from the tensors' shapes) and
loads with ``weights_only=True``. ``train_or_load`` reuses a model trained under the same config key in
``<run_dir>/checkpoints/`` (the one cache of every model kind, ``coursekit.modelcache``);
``outputs_match_in_fresh_process`` proves a checkpoint alone rebuilds its model. Part 2's text models have their own
save/load pair in ``coursekit.textmodels``, on the same cache. Introduced in notebooks/00_baseline.ipynb.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from torch import nn

from .files import save_torch_atomic
from .modelcache import config_key, train_or_load_cached
from .models import is_residual_block, model_from_spec, projection_shortcut, set_module

__all__ = ["save_checkpoint", "load_checkpoint", "config_key", "train_or_load", "outputs_match_in_fresh_process",
           "removed_modules", "reshape_to_state_dict"]


def removed_modules(model: nn.Module, spec: dict) -> dict[str, str]:
    """The modules of a fresh ``model_from_spec(spec)`` that ``model`` replaced: {name: "identity"} for a
    block removed by ``coursekit.trim.remove_blocks``, {name: "projection"} for a block reduced to its
    shortcut projection. Saved with checkpoints so that ``load_checkpoint`` rebuilds the same network."""
    fresh = dict(model_from_spec(spec).named_modules())
    out = {}
    for name, m in model.named_modules():
        if name not in fresh or type(fresh[name]) is type(m):
            continue
        if isinstance(m, nn.Identity):
            out[name] = "identity"
        elif isinstance(m, nn.Sequential) and is_residual_block(fresh[name]):
            out[name] = "projection"
    return out


@torch.no_grad()
def reshape_to_state_dict(model: nn.Module, state_dict: dict, removed=()) -> nn.Module:
    """Make ``model`` (built from its original spec) match a pruned or trimmed ``state_dict``, in place.

    ``removed`` ({name: "identity" | "projection"}, see ``removed_modules``; a list means all
    "identity"): those blocks become ``nn.Identity`` or their own shortcut projection. Then every Conv2d, BatchNorm2d and Linear
    takes the channel counts of its tensors in the state dict (same kernel, stride, padding,
    bias). After this, ``model.load_state_dict(state_dict)`` loads strictly. Returns ``model``.
    """
    removed = dict.fromkeys(removed, "identity") if isinstance(removed, (list, tuple)) else dict(removed)
    for name, kind in removed.items():
        block = model.get_submodule(name)
        set_module(model, name, projection_shortcut(block) if kind == "projection" else nn.Identity())
    for name, m in list(model.named_modules()):
        w = state_dict.get(f"{name}.weight" if name else "weight")
        if w is None:
            continue
        if isinstance(m, nn.Conv2d) and tuple(w.shape) != tuple(m.weight.shape):
            if m.groups != 1:
                raise ValueError(f"{name}: grouped convolutions cannot be reshaped")
            set_module(model, name, nn.Conv2d(w.shape[1], w.shape[0], m.kernel_size, m.stride, m.padding, m.dilation,
                                               bias=m.bias is not None, padding_mode=m.padding_mode))
        elif isinstance(m, nn.BatchNorm2d) and w.shape[0] != m.num_features:
            set_module(model, name, nn.BatchNorm2d(w.shape[0], m.eps, m.momentum, m.affine, m.track_running_stats))
        elif isinstance(m, nn.Linear) and tuple(w.shape) != tuple(m.weight.shape):
            set_module(model, name, nn.Linear(w.shape[1], w.shape[0], bias=m.bias is not None))
    return model


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

    def trained():
        model, metrics = train_fn()
        model.to(memory_format=torch.contiguous_format)  # as a loaded one would be
        return model.to(device).eval(), {"spec": config["spec"], "config": config, "metrics": metrics}

    return train_or_load_cached(run_dir, name, config_key(config), train=trained,
                                save=lambda path, model, info: save_checkpoint(path, model, config["spec"], config,
                                                                               info["metrics"]),
                                load=lambda path: load_checkpoint(path, device))


def outputs_match_in_fresh_process(path: str | os.PathLike, model: nn.Module, x: torch.Tensor) -> bool:
    """Load the checkpoint at ``path`` in a new Python process and compare its outputs on ``x`` with
    ``model``'s (on the CPU, eval mode, exact equality). Proves that the checkpoint alone rebuilds the model."""
    model = copy.deepcopy(model).cpu().eval().to(memory_format=torch.contiguous_format)  # as load_checkpoint builds it
    with torch.no_grad():
        y = model(x.cpu())
    with tempfile.TemporaryDirectory() as tmp:
        io_path = Path(tmp) / "io.pt"
        torch.save({"x": x.cpu(), "y": y}, io_path)
        code = ("import sys, torch; from coursekit.checkpoints import load_checkpoint; "
                f"m, _ = load_checkpoint({str(path)!r}); d = torch.load({str(io_path)!r}, weights_only=True); "
                "sys.exit(0 if torch.equal(m(d['x']), d['y']) else 3)")
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if done.returncode not in (0, 3):
        raise RuntimeError(f"loading {path} in a fresh process failed:\n{done.stderr[-2000:]}")
    return done.returncode == 0
