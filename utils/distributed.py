"""torchrun / DistributedDataParallel set-up (NCCL on GPUs, gloo on the CPU)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Callable, Optional

import torch
import torch.distributed as dist
from torch.distributed.elastic.multiprocessing.errors import ErrorHandler, record
from torch.nn.parallel import DistributedDataParallel

from configs.errors import ConfigError
from utils.gpu import missing_gpu_reason

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def pick_device(name: str, local_rank: int = 0, world_size: int = 1) -> torch.device:
    """The device of this process for ``train.device``. ``auto``: a GPU when one is visible,
    else the CPU. ``cuda``: GPU ``local_rank % device_count()`` (torchrun's LOCAL_RANK; a
    launcher that shows each rank only its own GPU gives each rank GPU 0). ``cuda:N``: that
    GPU, for one process only (torchrun's ranks cannot share one GPU)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"train.device={name!r}: expected auto, cpu, cuda or cuda:N") from None
    if device.type != "cuda":
        return device
    if not torch.cuda.is_available():
        raise ConfigError(f"train.device={name!r}, but {missing_gpu_reason()}; or set train.device=cpu")
    count = torch.cuda.device_count()
    if device.index is None:
        return torch.device("cuda", local_rank % count)
    if world_size > 1:
        raise ConfigError(
            f"train.device={name!r} names one GPU, but torchrun started {world_size} processes, which cannot share "
            "it: use train.device=cuda (each rank takes GPU LOCAL_RANK) and choose the GPUs with CUDA_VISIBLE_DEVICES"
        )
    if device.index >= count:
        raise ConfigError(f"train.device={name!r}, but {count} GPU(s) are visible (cuda:0 to cuda:{count - 1})")
    return device


def init_distributed(device_name: str = "auto", timeout_minutes: float = 60.0) -> DistInfo:
    """Join the torchrun process group when launched by torchrun; a single process otherwise.
    ``timeout_minutes`` (train.dist_timeout_minutes): how long a collective waits for the
    slowest rank, e.g. the others for rank 0's evaluation and checkpoint writing (NCCL's own
    default, 10 minutes, is shorter than a cross-domain evaluation plus a 1.35 GB last.pth on
    a slow disk)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_name, local_rank, world_size)
    if world_size == 1:
        return DistInfo(device=device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        timeout = timedelta(minutes=timeout_minutes)
        # Keys of each torchrun restart under their own prefix: the agent's store outlives a
        # failed attempt, and gloo would otherwise connect to the dead workers' addresses.
        store, rank, size = next(dist.rendezvous("env://", timeout=timeout))
        attempt = restart_attempt()
        dist.init_process_group(
            "nccl" if device.type == "cuda" else "gloo",
            store=dist.PrefixStore(f"fmfa_attempt_{attempt}", store),
            rank=rank,
            world_size=size,
            timeout=timeout,
            device_id=device if device.type == "cuda" else None,
        )
        if attempt:
            logger.warning("torchrun restart %s: rank %d rejoined", attempt, rank)
    return DistInfo(dist.get_rank(), world_size, local_rank, device)


# The file torchrun reads a failed worker's report from (torch's documented variable).
ERROR_FILE_ENV = "TORCHELASTIC_ERROR_FILE"


class WholeErrorFile(ErrorHandler):
    """torch's error report for torchrun, written to a temporary file and renamed into place,
    so torchrun finds it whole or not at all. When one rank fails, torchrun stops the others
    with SIGTERM; a rank killed inside torch's own ``open(file, "w")``/``json.dump`` leaves an
    empty error.json, and torchrun's agent then crashes on it (JSONDecodeError) instead of
    reporting the failure or restarting the job (seen once in CI with ``--max-restarts=1``).
    Only torch's public contract is used: its ``record_exception`` writes the file that
    ``TORCHELASTIC_ERROR_FILE`` names, pointed at the temporary file for that call."""

    def record_exception(self, e: BaseException) -> None:
        final = os.environ.get(ERROR_FILE_ENV)
        if not final:
            return super().record_exception(e)
        writing = f"{final}.{os.getpid()}.tmp"
        os.environ[ERROR_FILE_ENV] = writing
        try:
            super().record_exception(e)
        finally:
            os.environ[ERROR_FILE_ENV] = final
        os.replace(writing, final)


def record_errors(main: Callable) -> Callable:
    """``torch.distributed.elastic``'s ``@record`` (the failing rank's traceback goes into
    torchrun's report) with the report written whole (WholeErrorFile)."""
    return record(main, error_handler=WholeErrorFile())


def restart_attempt() -> int:
    """How many times torchrun has restarted this job's workers (0 outside torchrun)."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))


def elastic_job_id() -> str:
    """A short id of this torchrun job, the same across its restarts ("" outside torchrun)."""
    run_id = os.environ.get("TORCHELASTIC_RUN_ID", "")
    return "" if run_id in ("", "none") else "".join(c for c in run_id if c.isalnum())[:8]


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def broadcast_object(value, info: DistInfo):
    """Rank 0's ``value`` on every rank (e.g. the run folder name)."""
    if not info.distributed:
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def _gather_into(out: torch.Tensor, tensor: torch.Tensor) -> None:
    """Every rank's ``tensor`` concatenated into ``out``: all_gather_single where torch has it
    (the pinned 2.14 deprecates all_gather_into_tensor), else all_gather_into_tensor."""
    gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
    gather(out, tensor.contiguous())


class _GatherWithGrad(torch.autograd.Function):
    """All-gather whose backward sums every rank's gradient of each share back to its owner
    (an all-reduce of the whole gradient, then this rank's rows: any backend, and the
    gathered tensors of the losses are small next to DDP's gradient buckets)."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        ctx.rank, ctx.rows = dist.get_rank(), tensor.shape[0]
        out = tensor.new_empty((dist.get_world_size() * tensor.shape[0], *tensor.shape[1:]))
        _gather_into(out, tensor)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        total = grad.contiguous().clone()
        dist.all_reduce(total)
        return total[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows]


def all_gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenation over ranks of ``tensor`` [R, ...] -> [W * R, ...] in rank order,
    differentiable: the backward sums every rank's gradient of each share back to its owner."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor
    return _GatherWithGrad.apply(tensor)


class ProcessGroupCollective:
    """The default process group as :class:`model.loss.Collective`: what the losses of the
    global batch need (a differentiable gather, a sum for the logged values)."""

    def __init__(self):
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        return all_gather_with_grad(tensor)  # without requires_grad (identities) autograd records nothing

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        total = tensor.detach().clone()
        dist.all_reduce(total)
        return total


def loss_collective(info: DistInfo, global_batch_losses: bool) -> Optional[ProcessGroupCollective]:
    """What the criterion's batch-coupled losses gather over (``model.build.build_criterion``'s
    ``collective``): the process group under torchrun when ``global_batch_losses``
    (train.global_batch_losses); None = each process's own batch."""
    return ProcessGroupCollective() if info.distributed and global_batch_losses else None


def data_parallel(model: torch.nn.Module, info: DistInfo) -> torch.nn.Module:
    """The module to train: ``model`` itself on one process, ``model`` in DDP under torchrun."""
    if not info.distributed:
        return model
    return DistributedDataParallel(model, device_ids=[info.device.index] if info.device.type == "cuda" else None)


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
