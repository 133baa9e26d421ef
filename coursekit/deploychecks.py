"""Auto-checks of notebooks/12_deployment.ipynb's exercises: BatchNorm folded into a Linear layer (checked against
the pair's output), the fastest deployment path under an accuracy constraint (judged on the table the chapter
measured), and the reading of a measured result. ``coursekit.checks`` re-exports them."""

from __future__ import annotations

import torch
from torch import nn

from .hints import check_letter, fail

__all__ = ["check_fold_linear_bn", "fastest_within", "check_fastest_path", "check_overhead_answer"]


def check_fold_linear_bn(fn) -> None:
    """``fn(linear, bn) -> nn.Linear``: one Linear computing ``bn(linear(x))`` for an eval-mode BatchNorm1d;
    checked on random layers against the pair's output, and the inputs left unchanged."""
    torch.manual_seed(0)
    linear, bn = nn.Linear(6, 5), nn.BatchNorm1d(5).eval()
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.3, 2)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
    before = linear.weight.detach().clone()
    x = torch.randn(7, 6)
    with torch.no_grad():
        expected = bn(linear(x))
        fused = fn(linear, bn)
        if not isinstance(fused, nn.Linear):
            fail(f"fn returned {type(fused).__name__}, expected an nn.Linear.", "Build a new nn.Linear(in, out) and set "
                 "its weight and bias.")
        got = fused(x)
    if not torch.equal(linear.weight, before):
        fail("the original Linear's weight changed.", "Compute the folded weight into a new layer; leave the inputs alone.")
    if not torch.allclose(got, expected, atol=1e-5):
        fail(f"outputs differ from bn(linear(x)) by up to {float((got - expected).abs().max()):.3g}.",
             "BatchNorm in eval mode is y = gamma (z - mean) / sqrt(var + eps) + beta, one factor per output feature.",
             "The weight's rows scale by gamma / sqrt(var + eps); the bias becomes (b - mean) * that factor + beta.")
    print("check passed: the folded Linear computes bn(linear(x)) to 1e-5")


def fastest_within(table: dict, batch: str, max_drop_points: float, reference: str = "eager fp32") -> str:
    """The fastest path of ``table`` ({path: {"val_accuracy": 0..1, "cpu_b1": ms, ...}}) at ``batch`` (a latency
    key) among those within ``max_drop_points`` of ``reference``'s validation accuracy."""
    floor = table[reference]["val_accuracy"] - max_drop_points / 100
    allowed = {p: r for p, r in table.items() if r["val_accuracy"] >= floor - 1e-12 and batch in r}
    return min(allowed, key=lambda p: allowed[p][batch])


def check_fastest_path(fn, table: dict) -> None:
    """``fn(table, batch, max_drop_points) -> path``: checked on the chapter's measured ``table`` at every batch size
    it holds and three constraints, and on a hand-made table where the fastest path is too inaccurate."""
    toy = {"eager fp32": {"val_accuracy": 0.90, "cpu_b1": 3.0, "cpu_b64": 40.0},
           "fast but wrong": {"val_accuracy": 0.80, "cpu_b1": 0.5, "cpu_b64": 10.0},
           "good": {"val_accuracy": 0.899, "cpu_b1": 1.0, "cpu_b64": 30.0}}
    cases = [(toy, b, d) for b in ("cpu_b1", "cpu_b64") for d in (0.5, 20.0)]
    batches = sorted({k for r in table.values() for k in r if k.startswith(("cpu_b", "cuda_b"))})
    cases += [(table, b, d) for b in batches for d in (0.0, 0.2, 1.0)]
    for tab, batch, drop in cases:
        got, expected = fn(tab, batch, drop), fastest_within(tab, batch, drop)
        if got != expected:
            name = "the hand-made table" if tab is toy else "the chapter's table"
            fail(f"{name}, {batch}, at most {drop} points lost: you chose {got!r}, the fastest allowed is {expected!r}.",
                 "First keep the paths whose validation accuracy is within max_drop_points (points: 1 = 0.01) of "
                 "'eager fp32', then take the one with the smallest latency at that batch size.")
    print(f"check passed: the fastest allowed path, on the chapter's table ({len(table)} paths, {len(batches)} batch "
          "sizes) and on a hand-made one")


def check_overhead_answer(answer: str) -> None:
    """The letter of the explanation the chapter's measurements support (see the exercise's text)."""
    check_letter(answer, "c", wrong="does not fit every number of section 2 and 6.",
                 steps=("Which of the explanations predicts a large gain at batch 1 AND a small one at batch 64?",
                        "Compare the profiler's operator time with the wall time at batch 1: what is the rest?"),
                 passed="at batch 1 the time is per-call overhead, which a runtime removes; at batch 64 it is "
                        "arithmetic, which both run in similar kernels")
