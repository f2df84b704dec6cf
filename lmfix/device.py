"""Which device a command runs on, its float32 settings, and how a number names it.

A number is a setting of the machine that made it: on a CPU the thread count changes the order
of float summation, and the vector instruction set (AVX2 or AVX-512, as torch's kernels are
chosen) changes the rounding; a seventh of an epoch at lr 20 amplifies either into up to
~15% of perplexity. So every summary records both (:func:`describe`).
"""

from __future__ import annotations

import platform

import torch

from .errors import LmfixError


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise LmfixError("--device cuda was asked for but no CUDA GPU is available")
    if name != "cpu" and not name.startswith("cuda"):
        raise LmfixError(f"--device {name!r}: use auto, cpu or cuda")
    try:
        return torch.device(name)
    except RuntimeError as e:
        raise LmfixError(f"--device {name!r}: {e}") from None


def set_tf32(device: torch.device, on: bool) -> None:
    """On CUDA, allow TF32 (``--tf32``) or not in both cuBLAS and cuDNN. Both are set either
    way: PyTorch's own default allows TF32 in cuDNN, which runs the LSTM. No effect on CPUs."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = on
        torch.backends.cudnn.allow_tf32 = on


def check_amp(device: torch.device) -> None:
    """bfloat16 LSTMs need CPU support (oneDNN kernels: AVX-512 BF16/AMX); fail up front
    with one clear line instead of a oneDNN traceback at the first step."""
    if device.type != "cpu":
        return
    lstm = torch.nn.LSTM(4, 4)
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            lstm(torch.zeros(2, 1, 4))
    except RuntimeError:
        raise LmfixError("--amp: this CPU has no bfloat16 LSTM kernels (oneDNN refused one); "
                         "train without --amp, which is meant for CUDA GPUs") from None


def cpu_capability() -> str:
    """The vector instruction set torch's CPU kernels use here: AVX512, AVX2, DEFAULT, ..."""
    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except (AttributeError, RuntimeError):
        return "unknown"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    n = torch.get_num_threads()
    return (f"{platform.processor() or platform.machine()} CPU ({cpu_capability()}), "
            f"{n} thread{'s' if n != 1 else ''}")


def describe(device: torch.device) -> dict:
    """What a summary records of the machine: the device, its name, CPU threads and ISA."""
    return {"device": device.type, "device_name": device_name(device),
            "cpu_threads": torch.get_num_threads(), "cpu_capability": cpu_capability()}
