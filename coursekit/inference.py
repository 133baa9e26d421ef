"""Inference runtimes side by side: a model compiled by ``torch.compile`` (TorchInductor, weights frozen as
constants), the CPU's bfloat16 autocast, and the names the ledger's ``extra.runtime`` may hold. Every wrapper here
is a module that the course's evaluation and timing code takes as it takes the eager model (``copy.deepcopy`` gives
the same object back: a compiled graph or a runtime session is not copied, and must not be recompiled by a
copy). Introduced in notebooks/12_deployment.ipynb; ONNX Runtime is ``coursekit.onnxexport``, llama.cpp is
``coursekit.llamacpp``.
"""

from __future__ import annotations

import contextlib
import time

import torch
from torch import nn

from .validate import integer

__all__ = ["RUNTIMES", "validate_runtime", "CompiledModel", "Bf16Model", "require_eval_mode",
           "accuracy_in_fixed_batches"]

RUNTIMES = ("eager", "compile", "onnxruntime", "llama.cpp")


def validate_runtime(runtime: str) -> str:
    """``runtime`` when it is one of RUNTIMES, else a ValueError naming the allowed ones."""
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime: {runtime!r} is not allowed; use one of {RUNTIMES}")
    return runtime


def require_eval_mode(model: nn.Module, who: str) -> None:
    """Refuse a model with any module in training mode: folding, compiling with frozen weights and exporting all
    bake in BatchNorm's running statistics, which a module in training mode does not use."""
    training = [n or type(model).__name__ for n, m in model.named_modules() if m.training]
    if training:
        raise ValueError(f"{who}: the model is in training mode ({training[0]}{', ...' if len(training) > 1 else ''}); "
                         "call model.eval() first")


class CompiledModel(nn.Module):
    """``torch.compile(model)`` for inference: TorchInductor with ``freezing`` (weights become constants of the
    graph, so BatchNorm folds and weights are pre-packed for the CPU's kernels), one static graph per input shape,
    compiled eagerly on ``examples`` (the shapes that will be run) so the first timed call is not a compilation.

    ``compile_seconds`` holds the compile time of each example shape. ``channels_last`` converts the model and the
    inputs the way the course's timing does for 4-D image batches."""

    def __init__(self, model: nn.Module, examples: list[torch.Tensor], *, channels_last: bool = True):
        super().__init__()
        require_eval_mode(model, "CompiledModel")
        import torch._inductor.config as inductor_config

        self.channels_last = channels_last
        self.model = model.to(memory_format=torch.channels_last) if channels_last else model
        self.compiled = torch.compile(self.model, backend="inductor", dynamic=False)
        self.compile_seconds = []
        with inductor_config.patch(freezing=True), torch.no_grad():
            for x in examples:
                t0 = time.perf_counter()
                self.compiled(self._layout(x))
                self.compile_seconds.append(time.perf_counter() - t0)

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.dim() == 4 else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import torch._inductor.config as inductor_config

        with inductor_config.patch(freezing=True), torch.no_grad():  # a new shape compiles as the examples did
            return self.compiled(self._layout(x))

    def __deepcopy__(self, memo):
        return self

    def _apply(self, fn, recurse=True):  # .to(memory_format=...) by the timing code would invalidate the graph
        return self


class Bf16Model(nn.Module):
    """The wrapped model run under the CPU's bfloat16 autocast (matrix products in bf16, outputs float32)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.train(model.training)

    def forward(self, *args, **kwargs):
        with torch.autocast("cpu", dtype=torch.bfloat16) if not torch.is_autocast_enabled("cpu") else contextlib.nullcontext():
            return self.model(*args, **kwargs).float()


@torch.no_grad()
def accuracy_in_fixed_batches(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> float:
    """Accuracy (0..1) of ``model`` on inputs ``x`` (N, ...) with labels ``y`` (N,), fed in batches of exactly
    ``batch_size`` (the last one padded with zeros, whose outputs are dropped): a compiled model with static shapes
    and an exported one see only the shape they were built and timed at, so their accuracy is the same
    computation as their latency."""
    integer("batch_size", batch_size, lo=1, allowed="a positive integer")
    correct = 0
    for start in range(0, len(x), batch_size):
        chunk = x[start:start + batch_size]
        n = len(chunk)
        if n < batch_size:
            chunk = torch.cat([chunk, chunk.new_zeros(batch_size - n, *chunk.shape[1:])])
        logits = model(chunk)[:n].float()
        correct += int((logits.argmax(1) == y[start:start + n].to(logits.device)).sum())
    return correct / len(x)
