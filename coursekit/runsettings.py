"""Run-wide switches read from the environment, in one small core module that the training loop and the LLM helpers
can import without the profile table.

``COURSEKIT_DRY_RUN=<steps>``: run a profile's models, ratios and settings with every training loop stopped after
<steps> optimizer steps (and, in ``coursekit.profiles``, the data capped), on whatever device there is. It checks
configuration, never results: every environment report says so. Tested in tests/test_newcomer.py (every chapter)
and tests/test_gpu_dry_run.py (the switch).
"""

from __future__ import annotations

import os

__all__ = ["DRY_RUN_ENV", "dry_run_steps"]

DRY_RUN_ENV = "COURSEKIT_DRY_RUN"


def dry_run_steps() -> int | None:
    """The training-step cap of a dry run ($COURSEKIT_DRY_RUN, a positive integer), None outside one."""
    raw = os.environ.get(DRY_RUN_ENV, "").strip()
    if not raw:
        return None
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"{DRY_RUN_ENV}: {raw!r} is not allowed; use a positive integer (training steps per loop)")
    return int(raw)
