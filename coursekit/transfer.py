"""Transfer learning: reuse a trained backbone for a new task.

* ``replace_head`` -- keep the backbone, new classifier for N classes.
* ``freeze`` / ``unfreeze`` -- by parameter-name pattern (fnmatch, e.g. "stem*",
  "layer1.*"); frozen BatchNorm layers are kept in eval mode so their running
  statistics do not drift on the new data.
* ``stage_param_groups`` -- optimizer groups with a learning rate per stage.
* ``l2sp_penalty`` -- L2-SP (Li, Grandvalet & Davoine 2018): pull the weights back
  to the pretrained ones instead of to zero.
* ``load_matching`` -- copy pretrained weights by name and shape, refusing a
  silent no-op.
* ``extract_features`` / ``linear_probe`` -- features computed once, then a linear
  classifier trained on them.

Introduced in notebooks/01_transfer_learning.ipynb.
"""

from __future__ import annotations

import fnmatch

import torch
import torch.nn.functional as F
from torch import nn

from .train import decay_groups
from .validate import integer

__all__ = [
    "validate_labels_per_class",
    "replace_head",
    "freeze",
    "unfreeze",
    "trainable_names",
    "stage_param_groups",
    "l2sp_penalty",
    "load_matching",
    "extract_features",
    "linear_probe",
]


def validate_labels_per_class(labels_per_class, available: dict[str, int] | None = None) -> None:
    """Raise ValueError unless labels_per_class is a positive integer no larger than every class's supply."""
    integer("labels_per_class", labels_per_class, lo=1, allowed="a positive integer")
    if available:
        short = {c: n for c, n in available.items() if n < labels_per_class}
        if short:
            raise ValueError(f"labels_per_class: {labels_per_class} is more than some classes have: {short}; "
                             f"use at most {min(available.values())}")


def _head_name(model: nn.Module) -> str:
    for name in ("fc", "classifier", "head"):
        if isinstance(getattr(model, name, None), nn.Linear):
            return name
    raise ValueError("model has no nn.Linear head named fc, classifier or head; pass head_name")


def replace_head(model: nn.Module, num_classes: int, head_name: str | None = None) -> nn.Module:
    """Replace the final linear layer by a freshly initialised one with ``num_classes`` outputs (in place).

    The backbone is untouched; the new head keeps the old one's input size,
    device and dtype. Returns ``model``.
    """
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes: {num_classes!r} is not allowed; use an integer >= 2")
    name = head_name or _head_name(model)
    old = getattr(model, name)
    new = nn.Linear(old.in_features, num_classes).to(old.weight.device, old.weight.dtype)
    setattr(model, name, new)
    if isinstance(getattr(model, "config", None), dict) and "num_classes" in model.config:
        model.config["num_classes"] = num_classes
    return model


def _bn_eval_hook(module, args):
    module.eval()  # runs before every forward: model.train() cannot switch a frozen BN back


def _matching(model: nn.Module, patterns) -> list[str]:
    if isinstance(patterns, str):
        patterns = [patterns]
    names = [n for n, _ in model.named_parameters()]
    matched = [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns)]
    unmatched = [p for p in patterns if not any(fnmatch.fnmatchcase(n, p) for n in names)]
    if unmatched:
        stages = sorted({n.split(".")[0] for n in names})
        raise ValueError(f"patterns {unmatched} match no parameter; top-level names are {stages} (e.g. 'layer1.*')")
    return matched


def freeze(model: nn.Module, patterns, bn_eval: bool = True) -> list[str]:
    """Stop gradients for every parameter whose name matches one of ``patterns``.

    BatchNorm layers whose parameters are all frozen are put (and kept) in eval
    mode when ``bn_eval``: a frozen layer must not keep updating its running
    statistics. Returns the frozen parameter names.
    """
    names = _matching(model, patterns)
    params = dict(model.named_parameters())
    for n in names:
        params[n].requires_grad_(False)
    if bn_eval:
        for mod in model.modules():
            if isinstance(mod, nn.modules.batchnorm._BatchNorm) and all(not p.requires_grad for p in mod.parameters()):
                if not getattr(mod, "_frozen_eval_hook", None):
                    mod._frozen_eval_hook = mod.register_forward_pre_hook(_bn_eval_hook)
                mod.eval()
    return names


def unfreeze(model: nn.Module, patterns="*") -> list[str]:
    """Make matching parameters trainable again and release their BatchNorm layers. Returns their names."""
    names = _matching(model, patterns)
    params = dict(model.named_parameters())
    for n in names:
        params[n].requires_grad_(True)
    for mod in model.modules():
        hook = getattr(mod, "_frozen_eval_hook", None)
        if hook is not None and any(p.requires_grad for p in mod.parameters()):
            hook.remove()
            mod._frozen_eval_hook = None
    return names


def trainable_names(model: nn.Module) -> list[str]:
    """Names of the parameters that will receive gradients."""
    return [n for n, p in model.named_parameters() if p.requires_grad]


def stage_param_groups(model: nn.Module, lrs: dict[str, float], weight_decay: float = 5e-4) -> list[dict]:
    """Optimizer parameter groups with a learning rate per stage.

    lrs maps a top-level name pattern to a learning rate, e.g.
    {"stem": 0.01, "layer*": 0.05, "fc": 0.2}; the first matching pattern wins.
    Only trainable parameters are included; biases and norms get no weight decay.
    """
    by_stage: dict[str, list] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        top = name.split(".")[0]
        pattern = next((k for k in lrs if fnmatch.fnmatchcase(top, k)), None)
        if pattern is None:
            raise ValueError(f"lrs: no pattern matches parameter {name!r} (top-level {top!r}); patterns: {list(lrs)}")
        by_stage.setdefault(pattern, []).append(p)
    groups = []
    for pattern, params in by_stage.items():
        decayed, plain = decay_groups(params, weight_decay)
        decayed.update(lr=lrs[pattern], name=pattern)
        plain.update(lr=lrs[pattern], name=f"{pattern} (no decay)")
        groups += [g for g in (decayed, plain) if g["params"]]
    return groups


def l2sp_penalty(model: nn.Module, reference: dict[str, torch.Tensor], strength: float) -> torch.Tensor:
    """L2-SP (Li et al. 2018): strength/2 * sum ||w - w0||^2 over the parameters present in ``reference``.

    reference: {parameter name: pretrained tensor}, usually the backbone of the
    source model (the new head has no pretrained value and is left to plain
    weight decay). Zero at the pretrained weights.
    """
    if strength < 0:
        raise ValueError(f"strength: {strength!r} is not allowed; use a number >= 0")
    total = None
    for name, p in model.named_parameters():
        ref = reference.get(name)
        if ref is None or ref.shape != p.shape:
            continue
        term = (p - ref.to(p.device, p.dtype)).pow(2).sum()
        total = term if total is None else total + term
    if total is None:
        raise ValueError("l2sp_penalty: no parameter of the model matches the reference by name and shape")
    return 0.5 * strength * total


def load_matching(model: nn.Module, state: dict[str, torch.Tensor], skip=("fc.",)) -> dict:
    """Copy the tensors of ``state`` whose names and shapes match ``model``'s, except names starting with ``skip``.

    Raises ValueError when a non-skipped entry of the model finds no match, the
    failure that ``load_state_dict(strict=False)`` hides. Returns
    {"loaded": [...], "skipped": [...]}.
    """
    own = model.state_dict()
    loaded, skipped, missing = [], [], []
    for name, tensor in own.items():
        if name.startswith(tuple(skip)):
            skipped.append(name)
        elif name in state and state[name].shape == tensor.shape:
            loaded.append(name)
        else:
            missing.append(name)
    if missing:
        raise ValueError(f"load_matching: {len(missing)} model entries have no tensor of that name and shape in the "
                         f"state dict, e.g. {missing[:3]}; state dict names look like {list(state)[:3]}")
    model.load_state_dict({n: state[n] for n in loaded}, strict=False)
    return {"loaded": loaded, "skipped": skipped}


@torch.no_grad()  # not inference_mode: the features then train a probe under autograd
def extract_features(model: nn.Module, batches, head_name: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Backbone features (N, D) and labels (N,): the input of the model's head, computed once in eval mode."""
    name = head_name or _head_name(model)
    head = getattr(model, name)
    setattr(model, name, nn.Identity())
    was = model.training
    model.eval()
    try:
        feats, ys = zip(*[(model(x).float(), y) for x, y in batches], strict=True)
    finally:
        setattr(model, name, head)
        model.train(was)
    return torch.cat(feats), torch.cat(ys)


def linear_probe(features: torch.Tensor, labels: torch.Tensor, num_classes: int, *, epochs: int = 100,
                 lr: float = 0.05, weight_decay: float = 5e-4, seed: int = 0) -> nn.Linear:
    """Train a linear classifier on fixed features (N, D) -> (N, num_classes), full batch, AdamW with cosine decay.

    The features are standardised inside the layer's weights afterwards, so the
    returned layer applies directly to raw features.
    """
    if epochs < 1:
        raise ValueError(f"epochs: {epochs!r} is not allowed; use an integer >= 1")
    torch.manual_seed(seed)
    mean, std = features.mean(0), features.std(0) + 1e-6
    z = (features - mean) / std
    layer = nn.Linear(features.shape[1], num_classes).to(features.device)
    opt = torch.optim.AdamW(layer.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    for _ in range(epochs):
        loss = F.cross_entropy(layer(z), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    with torch.no_grad():  # fold the standardisation into the layer: W (x - m) / s + b
        w = layer.weight / std
        layer.bias -= (w * mean).sum(1)
        layer.weight.copy_(w)
    return layer
