"""LoRA from scratch (Hu et al. 2022, "LoRA: low-rank adaptation of large language models"): a frozen Linear W0 and a
trainable update of rank r, y = W0 x + (alpha / r) B A x, with A (r, in) drawn as peft draws it (Kaiming-uniform,
a = sqrt(5)) and B (out, r) zero, so training starts from the pretrained function exactly. After training the update
folds into one weight, W0 + (alpha / r) B A: no extra cost at inference. Introduced in notebooks/07 (section 8),
where a peft-trained model's adapters, loaded into these layers, give peft's outputs (tests/test_lora.py too)."""

from __future__ import annotations

import math
import re

import torch
from torch import nn

from .validate import integer, number

__all__ = ["LoRALinear", "add_lora", "merge_lora", "load_peft_adapters"]


class LoRALinear(nn.Module):
    """``base`` (frozen) plus (alpha / r) B A: forward (..., in) -> (..., out)."""

    def __init__(self, base: nn.Linear, r: int, alpha: float):
        super().__init__()
        integer("r", r, lo=1, hi=min(base.in_features, base.out_features))
        number("alpha", alpha, lo=0, lo_open=True)
        self.base, self.r, self.scaling = base, r, alpha / r
        base.weight.requires_grad_(False)
        if base.bias is not None:
            base.bias.requires_grad_(False)
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features, device=base.weight.device))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r, device=base.weight.device))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))

    def delta_weight(self) -> torch.Tensor:
        """(alpha / r) B A, (out, in): the update, of rank at most r."""
        return self.scaling * self.lora_B @ self.lora_A

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.scaling * ((x @ self.lora_A.t()) @ self.lora_B.t())

    def merged(self) -> nn.Linear:
        """A plain Linear with weight W0 + (alpha / r) B A and the base's bias."""
        out = nn.Linear(self.base.in_features, self.base.out_features, bias=self.base.bias is not None,
                        device=self.base.weight.device, dtype=self.base.weight.dtype)
        with torch.no_grad():
            out.weight.copy_(self.base.weight + self.delta_weight().to(self.base.weight.dtype))
            if self.base.bias is not None:
                out.bias.copy_(self.base.bias)
        return out


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)


def add_lora(model: nn.Module, target: str, *, r: int, alpha: float, train_also=()) -> dict[str, LoRALinear]:
    """Wrap every nn.Linear of ``model`` whose full name matches the regular expression ``target`` (re.fullmatch, as
    peft's ``target_modules`` string does) in a LoRALinear, in place; freeze every other parameter except those of
    modules named in ``train_also`` (a new head, as peft's ``modules_to_save``). Returns {name: LoRALinear}; refuses
    a target that matches no Linear."""
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and re.fullmatch(target, n)]
    if not names:
        raise ValueError(f"target: {target!r} matches no nn.Linear of the model")
    for p in model.parameters():
        p.requires_grad_(False)
    wrapped = {}
    for n in names:
        wrapped[n] = LoRALinear(model.get_submodule(n), r, alpha)
        _replace(model, n, wrapped[n])
    for n in train_also:
        for p in model.get_submodule(n).parameters():
            p.requires_grad_(True)
    return wrapped


def merge_lora(model: nn.Module) -> int:
    """Replace every LoRALinear of ``model`` by its merged Linear, in place. Returns how many were merged."""
    found = [(n, m) for n, m in model.named_modules() if isinstance(m, LoRALinear)]
    for n, m in found:
        _replace(model, n, m.merged())
    return len(found)


@torch.no_grad()
def load_peft_adapters(wrapped: dict[str, LoRALinear], peft_state: dict) -> int:
    """Copy A and B from a peft state dict (``get_peft_model_state_dict``: keys ending in "<name>.lora_A.weight" and
    "<name>.lora_B.weight") into the LoRALinear layers of ``add_lora``. Returns how many layers were loaded; every
    layer must find both matrices."""
    for name, layer in wrapped.items():
        a = [v for k, v in peft_state.items() if k.endswith(f"{name}.lora_A.weight")]
        b = [v for k, v in peft_state.items() if k.endswith(f"{name}.lora_B.weight")]
        if len(a) != 1 or len(b) != 1:
            raise KeyError(f"load_peft_adapters: no unique lora_A / lora_B for {name!r} in the peft state dict")
        layer.lora_A.copy_(a[0])
        layer.lora_B.copy_(b[0])
    return len(wrapped)
