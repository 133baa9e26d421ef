import pytest

from coursekit import profiles
from coursekit.profiles import PROFILES, resolve_profile
from coursekit.settings import validate_table


def test_every_profile_has_the_same_settings():
    keys = {name: set(p) for name, p in PROFILES.items()}
    assert keys["smoke"] == keys["cpu"] == keys["gpu"]


def test_explicit_profile_and_overrides(monkeypatch):
    p = resolve_profile("smoke")
    assert p.name == "smoke" and p.epochs == PROFILES["smoke"]["epochs"]
    p = resolve_profile("cpu", epochs=7, batch_size=None)
    assert p.epochs == 7, "an explicit value beats the profile"
    assert p.batch_size == PROFILES["cpu"]["batch_size"], "None keeps the profile's value"
    p.epochs = 99  # resolving copies: the table itself is never changed
    assert resolve_profile("cpu").epochs == PROFILES["cpu"]["epochs"]


def test_auto_follows_environment_then_cuda(monkeypatch):
    monkeypatch.setenv("COURSEKIT_PROFILE", "smoke")
    assert resolve_profile("auto").name == "smoke"
    assert resolve_profile("cpu").name == "cpu", "COURSEKIT_PROFILE replaces only 'auto'"
    monkeypatch.delenv("COURSEKIT_PROFILE")
    monkeypatch.setattr(profiles, "_cuda_available", lambda: False)
    assert resolve_profile("auto").name == "cpu"
    monkeypatch.setattr(profiles, "_cuda_available", lambda: True)
    assert resolve_profile("auto").name == "gpu"


def test_bad_values_are_refused(monkeypatch):
    with pytest.raises(ValueError, match="profile: 'fast' is not allowed.*smoke, cpu, gpu, auto"):
        resolve_profile("fast")
    with pytest.raises(ValueError, match="unknown profile setting.*'epoch'"):
        resolve_profile("smoke", epoch=3)
    monkeypatch.setenv("COURSEKIT_PROFILE", "turbo")
    with pytest.raises(ValueError, match="COURSEKIT_PROFILE: 'turbo' is not allowed"):
        resolve_profile("auto")
    monkeypatch.setattr(profiles, "_cuda_available", lambda: False)
    with pytest.raises(ValueError, match="'gpu' needs CUDA"):
        resolve_profile("gpu")


def test_attribute_access_names_the_missing_setting():
    with pytest.raises(AttributeError, match="no setting 'nope'"):
        _ = resolve_profile("smoke").nope


@pytest.mark.parametrize("override,match", [
    ({"epochs": 0}, "epochs: 0 is not allowed"),
    ({"batch_size": 2.5}, "batch_size: 2.5 is not allowed"),
    ({"val_fraction": 1.0}, r"val_fraction: 1.0 is not allowed; use a number in \[0, 1\)"),
    ({"lr": -0.1}, "lr: -0.1 is not allowed"),
    ({"kd_seeds": 0}, "kd_seeds: 0 is not allowed"),
    ({"train_per_class": 0}, "train_per_class: 0 is not allowed"),
    ({"amp": "bf17"}, "amp: 'bf17' is not allowed"),
    ({"text_attention": "flash"}, "text_attention: 'flash' is not allowed; use eager, sdpa"),
    ({"tta": 1}, "tta: 1 is not allowed"),
    ({"student_model": "resnet_cifar"}, "student_model: 'resnet_cifar' is not allowed; use a dict with the builder's 'name'"),
    ({"latency_batch_sizes": [0]}, "latency_batch_sizes: \\[0\\] is not allowed"),
    ({"crop_pad": -1}, "crop_pad: -1 is not allowed"),
    ({"kd_sweep_alphas": [1.5]}, "kd_sweep_alphas"),
    ({"transfer_label_sweep": [0]}, "transfer_label_sweep"),
    ({"text_head_keep": 0.0}, "text_head_keep: 0.0 is not allowed"),
    ({"llm_layers_removed": []}, "llm_layers_removed"),
])
def test_bad_setting_values_are_refused_when_the_profile_is_resolved(override, match):
    with pytest.raises(ValueError, match=match):
        resolve_profile("smoke", **override)


def test_every_setting_of_every_profile_is_validated():
    """Each setting, set to a value of the wrong type, is refused (so none slips through unchecked), and every
    profile as written passes, the gpu profile included (checked here without CUDA)."""
    from coursekit import profiles

    for settings in profiles.PROFILES.values():
        validate_table(dict(settings))
    for key in profiles.PROFILES["cpu"]:
        bad = dict(profiles.PROFILES["cpu"])
        bad[key] = "not a valid value"
        with pytest.raises(ValueError, match=key):
            validate_table(bad)


def test_every_profiles_layer_sweep_fits_its_language_model():
    """10's depth sweep removes 1 to n-1 of the profile's llm_num_layers (the dry run caps both to the smoke
    stand-in, so this is where the gpu profile's sweep is checked)."""
    from coursekit import profiles

    for name, settings in profiles.PROFILES.items():
        n = settings["llm_num_layers"]
        assert settings["llm_layers_removed"] and all(1 <= k < n for k in settings["llm_layers_removed"]), name
    caps = profiles.DRY_RUN_CAPS
    assert all(1 <= k < caps["llm_num_layers"] for k in caps["llm_layers_removed"])


def test_shared_settings_are_stated_once():
    from coursekit import profiles

    for key, value in profiles.SHARED.items():
        assert all(p[key] == value for p in profiles.PROFILES.values())
    differing = [k for k in profiles.PROFILES["cpu"] if k not in profiles.SHARED]
    assert all(len({repr(p[k]) for p in profiles.PROFILES.values()}) > 1 for k in differing), "shared keys in SHARED"


def test_settings_are_typed_fields_that_carry_their_own_rules():
    """A profile is a dataclass: every setting a field with a rule, run whenever the field is set; a setting missing
    from a table or a misspelt one is refused."""
    import dataclasses

    from coursekit import profiles

    rules = {f.name for f in dataclasses.fields(profiles.Profile) if "check" in f.metadata}
    assert rules == set(profiles.PROFILES["cpu"]), "every setting of the table is a field with a rule, and no other"
    p = resolve_profile("cpu")
    with pytest.raises(ValueError, match="epochs: 0 is not allowed; use an integer >= 1"):
        p.epochs = 0  # a later assignment is checked too
    with pytest.raises(ValueError, match=r"unknown profile setting\(s\) \['epoch'\]"):
        p.epoch = 3
    table = dict(profiles.PROFILES["cpu"])
    table["lr_factor"] = 0.5
    with pytest.raises(ValueError, match=r"unknown profile setting\(s\) \['lr_factor'\]"):
        validate_table(table)
    del table["lr_factor"], table["epochs"]
    with pytest.raises(ValueError, match=r"setting\(s\) \['epochs'\] have no value"):
        validate_table(table)
    assert p["epochs"] == p.epochs and dict(p)["lr"] == p.lr and "lr" in p and p.get("nope", 1) == 1
