"""Chapter parameters given as text: papermill's ``-p name value`` passes a string, so a list parameter may
arrive as "[8, 32]" or "8,32". One parser turns either into a list, or says how to pass a list."""

from __future__ import annotations

import json

__all__ = ["parse_int_list", "parse_str_list"]


def _as_list(name: str, value):
    if value is None or isinstance(value, (list, tuple)):
        return value
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                parsed = json.loads(text)
            except json.JSONDecodeError as err:
                raise ValueError(f"{name}: {value!r} is not a valid JSON list ({err.msg}); pass a list with "
                                 f"papermill -y '{name}: [a, b]', coursekit run -p {name}=a,b, or the text 'a,b'") from None
            if isinstance(parsed, list):
                return parsed
        return [part.strip() for part in text.split(",") if part.strip()]
    raise ValueError(f"{name}: {value!r} is not allowed; use a list, or its text form 'a,b' or '[a, b]'")


def parse_int_list(name: str, value) -> list[int] | None:
    """``value`` as a list of integers (None stays None): a list, "[8, 32]" or "8,32". ValueError names ``name``."""
    items = _as_list(name, value)
    if items is None:
        return None
    out = []
    for item in items:
        try:
            number = int(item) if not isinstance(item, bool) else None
        except (TypeError, ValueError):
            number = None
        if number is None or (isinstance(item, float) and item != number):
            raise ValueError(f"{name}: {value!r} is not allowed; use a list of integers such as [8, 32] or '8,32'")
        out.append(number)
    return out


def parse_str_list(name: str, value) -> list[str] | None:
    """``value`` as a list of strings (None stays None): a list, '["ship", "truck"]' or "ship,truck"."""
    items = _as_list(name, value)
    return None if items is None else [str(i) for i in items]
