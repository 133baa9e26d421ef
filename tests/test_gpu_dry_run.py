"""The gpu profile, checked without a GPU: with COURSEKIT_DRY_RUN the gpu profile keeps its models, ratios and
settings, every training loop stops after a few steps and the data is capped to a few batches
(coursekit.profiles.DRY_RUN_CAPS). Every chapter runs that way in tests/test_newcomer.py (the README's ``make course``
from a fresh clone, as a stranger with a GPU would run it); this file checks the switch itself."""

import pytest

from coursekit.profiles import DRY_RUN_CAPS, PROFILES, resolve_profile

STEPS = 2


def test_dry_run_keeps_the_gpu_profiles_models_and_ratios_and_caps_only_data_and_steps(monkeypatch):
    monkeypatch.setenv("COURSEKIT_DRY_RUN", str(STEPS))
    p = resolve_profile("gpu")
    for key, value in PROFILES["gpu"].items():
        assert p[key] == DRY_RUN_CAPS.get(key, value), key
    assert p.dry_run == {"max_train_steps": STEPS, "caps": DRY_RUN_CAPS}
    monkeypatch.setenv("COURSEKIT_DRY_RUN", "0")
    with pytest.raises(ValueError, match="COURSEKIT_DRY_RUN: '0' is not allowed"):
        resolve_profile("cpu")
