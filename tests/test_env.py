import pytest
import torch

from coursekit.env import autocast_dtype, environment_report, pick_device, seed_everything
from coursekit.profiles import resolve_profile


def test_seed_everything_repeats_random_streams():
    seed_everything(5)
    a = torch.randn(4)
    g = seed_everything(5)
    assert torch.equal(a, torch.randn(4))
    assert torch.equal(torch.randn(3, generator=g), torch.randn(3, generator=torch.Generator().manual_seed(5)))


@pytest.mark.parametrize("bad", [-1, 1.5, "0", True])
def test_bad_seed(bad):
    with pytest.raises(ValueError, match="seed"):
        seed_everything(bad)


def test_device_and_autocast_choices():
    assert pick_device("cpu").type == "cpu" and pick_device("smoke").type == "cpu"
    assert autocast_dtype("cpu", "off") is None
    assert autocast_dtype("cpu", "bf16") is torch.bfloat16
    assert autocast_dtype("cpu", "auto") in (None, torch.bfloat16)
    with pytest.raises(ValueError, match="amp: unknown value 'fp8'"):
        autocast_dtype("cpu", "fp8")


def test_environment_report_says_profile_device_and_versions():
    rep = environment_report(resolve_profile("smoke"), "cpu")
    for key in ("profile", "device", "device_name", "torch", "torchvision", "torch_threads", "python"):
        assert rep[key] not in (None, "")
    assert rep["profile"] == "smoke" and rep["torch"] == torch.__version__
