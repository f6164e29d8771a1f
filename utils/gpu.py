"""Why no GPU is visible, in words a user can act on: a CPU-only torch build, an NVIDIA
driver too old for the torch build's CUDA, a driver torch cannot reach, or no driver at all."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Optional, Tuple

import torch

DRIVER_VERSION_FILE = Path("/proc/driver/nvidia/version")
# The oldest Linux driver each CUDA major release runs on (CUDA's minor-version
# compatibility: NVIDIA's CUDA Toolkit release notes, "CUDA Driver" table).
MIN_DRIVER = {11: "450.80.02", 12: "525.60.13", 13: "580.65.06"}
WHEEL_INDEX = {11: "cu118", 12: "cu126", 13: "cu130"}  # download.pytorch.org/whl/<index>: a build per CUDA major
OTHER_BUILDS = "https://pytorch.org/get-started/previous-versions/"


def _version(text: str) -> Tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text))


def nvidia_driver_version(version_file: Path = DRIVER_VERSION_FILE) -> Optional[str]:
    """The installed NVIDIA kernel driver's version ("580.65.06"), or None when there is none
    (read from the kernel module's /proc file, else from nvidia-smi)."""
    try:
        match = re.search(r"Kernel Module.*?\s(\d+\.\d+(?:\.\d+)?)\s", version_file.read_text())
        if match:
            return match.group(1)
    except OSError:
        pass
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=20,
            ).stdout.split()
        except (OSError, subprocess.SubprocessError):
            return None
        return out[0] if out and re.fullmatch(r"\d+\.\d+(\.\d+)?", out[0]) else None
    return None


def missing_gpu_reason() -> str:
    """One sentence on why ``torch.cuda.is_available()`` is False on this machine."""
    return describe_missing_gpu(
        nvidia_driver_version(), torch.version.cuda, torch.__version__, os.environ.get("CUDA_VISIBLE_DEVICES")
    )


def describe_missing_gpu(
    driver: Optional[str], torch_cuda: Optional[str], torch_version: str, visible: Optional[str]
) -> str:
    """Why torch sees no GPU, from the NVIDIA driver's version (None: none installed), the CUDA
    release torch was built for (None: a CPU-only build), torch's version and
    CUDA_VISIBLE_DEVICES; names the torch build to install where a different one would work."""
    runs = [major for major, oldest in MIN_DRIVER.items() if driver and _version(driver) >= _version(oldest)]
    index = WHEEL_INDEX[max(runs)] if runs else WHEEL_INDEX[12]
    install = (
        f"pip install torch=={torch_version.split('+')[0]} --index-url https://download.pytorch.org/whl/{index} "
        f"(the CUDA builds of each release: {OTHER_BUILDS})"
    )
    build = f"torch {torch_version}"
    if torch_cuda is None:
        if driver is None:
            return f"no GPU: {build} is a CPU-only build and no NVIDIA driver is installed"
        return (
            f"{build} is a CPU-only build, but NVIDIA driver {driver} is installed: install a CUDA build of the same "
            f"release, e.g. {install}"
        )
    if driver is None:
        return f"no GPU: no NVIDIA driver is installed (no {DRIVER_VERSION_FILE}, no nvidia-smi)"
    needed = MIN_DRIVER.get(_version(torch_cuda)[0])
    if needed and _version(driver) < _version(needed):
        return (
            f"NVIDIA driver {driver} is too old for {build}, built for CUDA {torch_cuda} (needs driver >= {needed}): "
            f"update the driver, or install a torch built for a CUDA this driver runs "
            f"({', '.join(f'CUDA {m}.x' for m in runs) or 'none of CUDA 11-13'}), e.g. {install}"
        )
    hint = (
        f"CUDA_VISIBLE_DEVICES={visible!r} hides them"
        if visible is not None
        else "check that nvidia-smi lists a GPU, and that a container was started with its GPUs (docker run --gpus all)"
    )
    return f"NVIDIA driver {driver} is installed and runs CUDA {torch_cuda}, but torch sees no GPU: {hint}"


def keep_off_the_gpus() -> None:
    """Hide every GPU from this process (``train.device=cpu``), before CUDA is first asked for:
    otherwise torch initialises CUDA on a machine that has a GPU even for a run on the CPU (its
    optimizers look for a CUDA graph capture at every step), holding GPU memory for a context."""
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
