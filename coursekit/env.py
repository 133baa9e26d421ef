"""Device choice, seeding and the environment report printed at the top of every notebook.

Introduced in notebooks/00_baseline.ipynb.
"""

from __future__ import annotations

import contextlib
import functools
import os
import platform
import random
import time

import numpy as np
import torch

from .validate import integer

__all__ = ["pick_device", "seed_everything", "autocast_dtype", "autocast_context", "environment_report", "require_cuda"]


def pick_device(profile_name: str | None = None) -> torch.device:
    """CUDA when available (and the profile is not "smoke" or "cpu"), else CPU."""
    if profile_name in ("smoke", "cpu"):
        return torch.device("cpu")
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def require_cuda(device: torch.device | str, what: str) -> torch.device:
    """The one check in front of every CUDA-only path (autocast dtype choice, CUDA timing with synchronisation): a
    CUDA ``device`` on a machine without a usable GPU is one clear error naming ``what`` needed it, never a stack
    trace from deep inside torch. Returns the device."""
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"{what}: device {str(device)!r} needs a CUDA GPU, and torch.cuda.is_available() is False on "
                           "this machine; use device='cpu' (or profile 'cpu' / 'auto')")
    return device


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch (CPU and CUDA); return a torch.Generator seeded the same."""
    integer("seed", seed, lo=0, allowed="a non-negative integer")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def _cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where it cannot be read, e.g. outside Linux)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@functools.cache
def _cpu_bf16_is_faster() -> bool:
    """True when bf16 autocast should be used on this CPU: at once when the CPU has native bf16 instructions
    (``NATIVE_BF16_FLAGS``), otherwise by timing a small conv in fp32 and under bf16 autocast (>= 1.2x faster).

    CPUs without native bf16 (AVX2-only) emulate it and run 5-15x slower, so for them the choice is measured. On a
    CPU that has the instructions the flag decides: a timing taken while another process loads the machine can come
    out below 1.2x and silently switch a whole run (and its cache keys) to fp32.
    """
    if _cpu_flags() & set(NATIVE_BF16_FLAGS):
        return True
    conv = torch.nn.Conv2d(64, 64, 3, padding=1).to(memory_format=torch.channels_last)
    x = torch.randn(32, 64, 16, 16).contiguous(memory_format=torch.channels_last)

    def run(enabled: bool) -> float:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled):
            conv(x)  # warm-up: kernel selection
            t = time.perf_counter()
            for _ in range(3):
                conv(x)
            return time.perf_counter() - t

    return run(False) / run(True) >= 1.2


def autocast_dtype(device: torch.device | str, amp: str = "auto") -> torch.dtype | None:
    """The autocast dtype to train with, or None for plain fp32.

    amp: "auto" (bf16 on CUDA when supported else fp16; bf16 on a CPU with native bf16
    instructions, or where a short timing finds it faster), "bf16", "fp16" or "off".
    """
    allowed = ("auto", "bf16", "fp16", "off")
    if amp not in allowed:
        raise ValueError(f"amp: {amp!r} is not allowed; use {', '.join(allowed)}")
    kind = torch.device(device).type
    if amp == "off":
        return None
    if amp == "bf16":
        return torch.bfloat16
    if amp == "fp16":
        return torch.float16
    if kind == "cuda":
        require_cuda(device, "autocast_dtype")
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if _cpu_bf16_is_faster() else None


def autocast_context(device: torch.device | str, dtype: torch.dtype | None):
    """``torch.autocast`` on ``device``'s type with ``dtype`` (from ``autocast_dtype``), or a no-op for None (fp32)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _torchvision_version() -> str:
    """``torchvision.__version__`` (local label included, "0.29.1+cu130"), read from its version.py when torchvision
    is not imported yet: importing it loads torch._dynamo, 1.5 s of a notebook's start that a Part 2 chapter, or a
    chapter stopped by a bad parameter, never needs."""
    import importlib.metadata
    import importlib.util
    import re
    import sys

    if "torchvision" in sys.modules:
        return sys.modules["torchvision"].__version__
    spec = importlib.util.find_spec("torchvision")
    version_py = os.path.join(os.path.dirname(spec.origin), "version.py") if spec and spec.origin else ""
    if os.path.isfile(version_py):
        with open(version_py, encoding="utf-8") as f:
            found = re.search(r"""^__version__\s*=\s*['"]([^'"]+)['"]""", f.read(), re.MULTILINE)
        if found:
            return found.group(1)
    return importlib.metadata.version("torchvision")


def environment_report(profile: dict, device: torch.device | str) -> dict:
    """Versions, device, CPU threads and the resolved profile, as a dict (print it in notebooks)."""
    device = torch.device(device)
    report = {
        "profile": profile.get("name"),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name(),
        "cpu_name": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": _torchvision_version(),
        "numpy": np.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "autocast": str(autocast_dtype(device, profile.get("amp", "auto"))),
        "platform": platform.platform(),
    }
    if device.type == "cuda":
        report["cuda"] = torch.version.cuda
    if profile.get("dry_run"):
        report["dry_run"] = (f"NOT a {profile.get('name')} run: its models and settings on {device.type}, every training "
                             f"loop stopped after {profile['dry_run']['max_train_steps']} steps, data capped to a few "
                             "batches; a configuration check, no figure of the course")
    return report
