"""The hint ladder of the exercise checkers (MIT 6.5940 lab style): a failed check raises AssertionError with a
hint, and each further failure of the same kind shows one more step, never the code of a solution.
"""

from __future__ import annotations

from collections import Counter

from .settings import EXERCISE_JUDGE

__all__ = ["fail", "reset_hints", "judged_note", "judge_targets", "check_letter", "ACCURACY_TOLERANCE_POINTS"]

_JUDGED = {"all": "both targets judged", "size": "the size judged; the accuracy reported, not judged",
           "none": "reported, not judged: the targets were set on the cpu profile, for the data the chapter uses by default"}


def judged_note(judge: str) -> str:
    """What a numeric-target check judges under ``judge`` (the profile's ``exercise_judge``: "all", "size" or
    "none"), as the last words of its report line; an unknown value is refused."""
    if judge not in EXERCISE_JUDGE:
        raise ValueError(f"judge: {judge!r} is not allowed; use {', '.join(EXERCISE_JUDGE)}")
    return _JUDGED[judge]


# How far the course's own answers to the numeric-target exercises moved between two 2-core CPUs, same code, seed and
# profile (cpu): 00's design -3.56 points against its reference on an AMD EPYC, -5.40 on an Intel Xeon; 03 -3.30 and
# -1.64; 04 -2.10 and -1.28; 02 +5.30 and +6.00. A network trained on another CPU is another network (float kernels
# round differently and training amplifies it), so an accuracy miss smaller than this is reported, not failed.
ACCURACY_TOLERANCE_POINTS = 2.0


def judge_targets(judge: str, *, ratio: float, max_ratio: float, drop: float, max_drop: float,
                  size_failure: tuple[str, ...], accuracy_failure: tuple[str, ...],
                  tolerance: float = ACCURACY_TOLERANCE_POINTS) -> None:
    """The judging every numeric-target check shares: the size target (``ratio`` <= ``max_ratio``) is judged unless
    ``judge`` is "none", the accuracy target (``drop`` <= ``max_drop``, in points unless the check says otherwise)
    only when it is "all"; a miss fails with its (message, hint steps...) through ``fail``. An accuracy miss of at
    most ``tolerance`` (default ``ACCURACY_TOLERANCE_POINTS``, the measured spread between two CPUs; a check whose
    ``drop`` is not in points passes its own) prints that it is within that spread and does not fail. Call
    ``judged_note(judge)`` first: it refuses unknown values."""
    if judge != "none" and ratio > max_ratio + 1e-12:
        fail(*size_failure)
    if judge == "all" and drop > max_drop + 1e-9:
        if drop > max_drop + tolerance + 1e-9:
            fail(*accuracy_failure)
        print(f"accuracy target missed by {drop - max_drop:.2f} points, within the {tolerance:.2f} points that the "
              f"course's own answers moved between two CPUs (same code and seed): reported, not failed; a larger miss "
              f"fails")


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


def check_letter(answer, correct: str, *, wrong: str, steps: tuple[str, ...], passed: str) -> None:
    """A multiple-choice answer (one letter, 'a' to 'd', any case) against ``correct``: anything else fails first;
    a wrong letter fails with "<answer> <wrong>" and the hint ladder ``steps``; the right one prints ``passed``."""
    if not isinstance(answer, str) or answer.strip().lower() not in ("a", "b", "c", "d"):
        fail(f"answer {answer!r}: give one letter, 'a' to 'd'.")
    if answer.strip().lower() != correct:
        fail(f"{answer!r} {wrong}", *steps)
    print(f"check passed: {passed}")


def reset_hints() -> None:
    """Start every hint ladder at its first step again."""
    _HINTS_GIVEN.clear()
