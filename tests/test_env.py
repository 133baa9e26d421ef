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
    with pytest.raises(ValueError, match="amp: 'fp8' is not allowed"):
        autocast_dtype("cpu", "fp8")


def test_environment_report_says_profile_device_and_versions():
    rep = environment_report(resolve_profile("smoke"), "cpu")
    for key in ("profile", "device", "device_name", "torch", "torchvision", "torch_threads", "python"):
        assert rep[key] not in (None, "")
    assert rep["profile"] == "smoke" and rep["torch"] == torch.__version__


def test_native_bf16_cpus_choose_bf16_without_timing(monkeypatch):
    from coursekit import env

    def no_timing(*a, **k):
        raise AssertionError("a CPU with native bf16 must not be timed")

    env._cpu_bf16_is_faster.cache_clear()
    monkeypatch.setattr(env, "_cpu_flags", lambda: {"avx512f", "avx512_bf16"})
    monkeypatch.setattr(env.time, "perf_counter", no_timing)
    try:
        assert env.autocast_dtype("cpu", "auto") is torch.bfloat16
    finally:
        env._cpu_bf16_is_faster.cache_clear()
    # without the instructions the choice is timed: a fake clock makes fp32 take 3 units and bf16 1 unit, then 1 and 3
    monkeypatch.setattr(env, "_cpu_flags", lambda: {"avx2"})
    for ticks, expected in (([0, 3, 0, 1], torch.bfloat16), ([0, 1, 0, 3], None)):
        clock = iter(ticks)
        monkeypatch.setattr(env.time, "perf_counter", lambda clock=clock: next(clock))
        env._cpu_bf16_is_faster.cache_clear()
        try:
            assert env.autocast_dtype("cpu", "auto") is expected
        finally:
            env._cpu_bf16_is_faster.cache_clear()


def test_cuda_only_paths_give_one_clear_line_without_a_gpu():
    import pytest
    import torch
    from torch import nn

    from coursekit.env import autocast_dtype, require_cuda
    from coursekit.metrics import measure_latency

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert require_cuda("cpu", "x") == torch.device("cpu")
    with pytest.raises(RuntimeError, match="autocast_dtype: device 'cuda' needs a CUDA GPU"):
        autocast_dtype("cuda", "auto")
    with pytest.raises(RuntimeError, match="measure_latency: device 'cuda:0' needs a CUDA GPU"):
        measure_latency(nn.Linear(2, 2), 1, device="cuda:0", input_size=(2,))


def test_the_report_names_torchvisions_version_without_importing_it():
    """Importing torchvision loads torch._dynamo (1.5 s); the report reads the same version string from its files."""
    import subprocess
    import sys

    code = ("import sys, torch; from coursekit.env import environment_report; "
            "r = environment_report({'name': 'smoke'}, 'cpu'); loaded = 'torchvision' in sys.modules; "
            "import torchvision; print(loaded, r['torchvision'] == torchvision.__version__)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["False", "True"], done.stderr[-2000:]
