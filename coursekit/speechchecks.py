"""Auto-checks of notebooks/13_speech_capstone.ipynb's exercises: the activation arena of a keyword spotter (checked
against ``kws.activation_arena_bytes`` on several models), a student design under a byte budget (judged on the
validation speakers' accuracy the chapter measures), and the reading of the chapter's memory table.
``coursekit.checks`` re-exports them."""

from __future__ import annotations

import torch
from torch import nn

from .hints import check_letter, fail, judge_targets, judged_note
from .kws import DSCNN, activation_arena_bytes

__all__ = ["check_arena_bytes", "check_speech_design", "check_arena_answer"]


def check_arena_bytes(fn) -> None:
    """``fn(model, input_size, bytes_per_value) -> int``: the arena of three DS-CNNs (one with a removed block) and
    a plain MLP, in int8 and in fp32, as ``kws.activation_arena_bytes`` computes it."""
    trimmed = DSCNN(16, 3)
    trimmed.blocks[1] = nn.Identity()
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(40 * 51, 64), nn.ReLU(), nn.Linear(64, 10))
    cases = [(DSCNN(32, 4), (1, 40, 51)), (DSCNN(8, 1, stride=(1, 1)), (1, 40, 101)), (trimmed, (1, 20, 26)),
             (mlp, (1, 40, 51))]
    for model, size in cases:
        for per_value in (1, 4):
            with torch.no_grad():
                got, expected = fn(model, size, per_value), activation_arena_bytes(model, size, per_value)
            if got != expected:
                fail(f"{type(model).__name__} on input {size}, {per_value} byte(s) per value: you found {got!r} bytes, "
                     f"expected {expected}.",
                     "Run one example (batch 1) through the model and look at every leaf layer's input and output.",
                     "A layer needs its input and its output in memory at the same time: the arena is the largest "
                     "(input values + output values) over the layers, times the bytes per value.")
    print(f"check passed: the arena of {len(cases)} models in int8 and fp32")


def check_speech_design(report: dict, *, budget_bytes: int, min_val_accuracy: float, judge: str) -> None:
    """A design or plan's ``report`` ({"int8_weight_bytes", "val_accuracy", ...}) against the exercise's targets: int8
    weights within ``budget_bytes`` and validation accuracy (the heard speakers' validation takes) at least
    ``min_val_accuracy``; ``judge`` is the profile's ``exercise_judge`` (what is judged on this profile and data)."""
    note = judged_note(judge)
    size, acc = report["int8_weight_bytes"], report["val_accuracy"]
    judge_targets(judge, ratio=size / budget_bytes, max_ratio=1.0, drop=100 * (min_val_accuracy - acc), max_drop=0.0,
                  size_failure=(f"{size:,} bytes of int8 weights is over the budget of {budget_bytes:,}.",
                                "Parameters are bytes in int8: where are the teacher's? Count the stem, the blocks and "
                                "the classifier.",
                                "A block of width w holds about w x (w + 13) parameters: pruning a ratio r of the "
                                "channels shrinks it by about (1 - r) squared; the stem by (1 - r)."),
                  accuracy_failure=(f"validation accuracy {acc:.2%} is below the target {min_val_accuracy:.2%}.",
                                    "List every plan that fits the budget with its parameter count: section 8 measured "
                                    "what a block and what half of the channels cost the teacher.",
                                    "Below 16 channels a block has little left to compute with; above it, each block "
                                    "removed takes a whole path with it (no shortcuts). Which trade fits here?"))
    print(f"design: {size:,} bytes of int8 weights (budget {budget_bytes:,}), validation accuracy {acc:.2%} "
          f"(target {min_val_accuracy:.2%}): {note}")


def check_arena_answer(answer: str) -> None:
    """The letter of the change that shrinks the arena (see the exercise's text)."""
    check_letter(answer, "b", wrong="does not shrink the largest layer's input plus output.",
                 steps=("The arena is set by ONE layer, the largest: which change makes that layer's tensors smaller?",
                        "Weights live in flash; the arena holds activations, whose size is channels x mel bands x "
                        "frames."),
                 passed="the arena is the largest activation pair; fewer channels or a coarser feature map shrink "
                        "it, fewer blocks or fewer bits per weight do not")
