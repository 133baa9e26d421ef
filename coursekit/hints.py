"""The hint ladder of the exercise checkers (MIT 6.5940 lab style): a failed check raises AssertionError with a
hint, and each further failure of the same kind shows one more step, never the code of a solution.
"""

from __future__ import annotations

from collections import Counter

__all__ = ["fail", "reset_hints"]


_HINTS_GIVEN: Counter = Counter()  # per hint ladder (its first step): how often it was shown in this kernel


def fail(message: str, *steps: str):
    """Raise AssertionError(message + a hint). A ladder of several ``steps`` shows one more step at each failure of
    the same kind: first what to think about, then the formula; never the code of a solution."""
    shown = _HINTS_GIVEN[steps[0]]
    _HINTS_GIVEN[steps[0]] += 1
    if len(steps) == 1:
        raise AssertionError(f"{message}\nHint: {steps[0]}")
    k = min(shown, len(steps) - 1)
    more = " (try again: a failure of the same kind shows the next step)" if k < len(steps) - 1 else ""
    raise AssertionError(f"{message}\nHint (step {k + 1} of {len(steps)}): {steps[k]}{more}")


def reset_hints() -> None:
    """Start every hint ladder at its first step again."""
    _HINTS_GIVEN.clear()
