"""One way to refuse a bad argument, with one message: ``name: value is not allowed; use ...``.

Every public function of the package checks what a user can pass it before any work starts, through these helpers,
so every refusal reads the same and names the parameter, the value and what is allowed (choices among names too:
``name: 'x' is not allowed; use a, b``). Notebooks call the public validators of the modules (``validate_*``).
"""

from __future__ import annotations

__all__ = ["refuse", "is_int", "is_number", "integer", "number", "fraction", "one_of"]


def refuse(name: str, value, allowed: str):
    """Raise ValueError("name: value is not allowed; use <allowed>")."""
    raise ValueError(f"{name}: {value!r} is not allowed; use {allowed}")


def is_int(value) -> bool:
    """An int that is not a bool (True is an int to Python, never a count to us)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value) -> bool:
    """An int or float that is not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _range_text(kind: str, lo, hi) -> str:
    if lo is not None and hi is not None:
        return f"{kind} from {lo} to {hi}"
    if lo is not None:
        return f"{kind} >= {lo}"
    return f"{kind} <= {hi}" if hi is not None else kind


def integer(name: str, value, *, lo: int | None = None, hi: int | None = None, allowed: str | None = None) -> int:
    """``value`` when it is an integer in [lo, hi] (either bound optional); else refused, saying ``allowed`` (default:
    "an integer >= lo", "an integer from lo to hi", ...)."""
    if is_int(value) and (lo is None or value >= lo) and (hi is None or value <= hi):
        return value
    refuse(name, value, allowed or _range_text("an integer", lo, hi))


def number(name: str, value, *, lo: float | None = None, hi: float | None = None, lo_open: bool = False,
           hi_open: bool = False, allowed: str | None = None) -> float:
    """``value`` as a float when it is a number within the bounds (``lo_open`` / ``hi_open``: the bound itself is
    excluded); else refused, saying ``allowed`` (default: the interval)."""
    ok = is_number(value) and (lo is None or (value > lo if lo_open else value >= lo)) \
        and (hi is None or (value < hi if hi_open else value <= hi))
    if ok:
        return float(value)
    if allowed is None:
        if lo is not None and hi is not None:
            allowed = f"a number in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
        elif lo is not None:
            allowed = "a positive number" if (lo == 0 and lo_open) else f"a number {'>' if lo_open else '>='} {lo}"
        else:
            allowed = _range_text("a number", lo, hi)
    refuse(name, value, allowed)


def fraction(name: str, value) -> float:
    """``value`` as a float in [0, 1) (a sparsity, a ratio, a share held out); else refused."""
    return number(name, value, lo=0, hi=1, hi_open=True)


def one_of(name: str, value, allowed):
    """``value`` when it is one of ``allowed``; else ValueError("name: 'x' is not allowed; use a, b")."""
    if value not in allowed:
        raise ValueError(f"{name}: {value!r} is not allowed; use {', '.join(map(str, allowed))}")
    return value
