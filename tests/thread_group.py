"""N ranks as threads of the test process: a :class:`model.loss.Collective` without process launches.

Each rank runs the same function in its own thread and the ranks meet at every collective call,
as torchrun's processes do. ``gather`` hands every rank the true concatenation of the ranks'
tensors in rank order, with the gradient flowing to the rank's own share only; its backward sums
every rank's gradient of the gathered tensor and keeps the own rows, which is what
``utils.distributed.all_gather_with_grad`` does with an all-reduce. ``sum`` is the all-reduce of
the logged values. A rank that fails breaks the barrier, so the others stop instead of waiting.
"""

from __future__ import annotations

import threading
from typing import Callable, List, TypeVar

import torch

Result = TypeVar("Result")
TIMEOUT_S = 120  # a rank missing from a collective call fails the test instead of hanging it


class ThreadGroup:
    """The meeting point of ``world_size`` rank threads."""

    def __init__(self, world_size: int):
        self.world_size = world_size
        self._barrier = threading.Barrier(world_size, timeout=TIMEOUT_S)
        self._slots: List[torch.Tensor] = [torch.empty(0)] * world_size

    def exchange(self, rank: int, tensor: torch.Tensor) -> List[torch.Tensor]:
        """Every rank's ``tensor`` of this call, in rank order."""
        self._slots[rank] = tensor
        self._barrier.wait()
        parts = list(self._slots)
        self._barrier.wait()  # no rank overwrites its slot before every rank has read them all
        return parts

    def run(self, function: Callable[["RankCollective"], Result]) -> List[Result]:
        """``function(collective)`` on every rank at once; the results in rank order."""
        results: List[Result] = [None] * self.world_size  # type: ignore[list-item]
        errors: List[BaseException] = []

        def rank_main(rank: int) -> None:
            try:
                results[rank] = function(RankCollective(self, rank))
            except BaseException as error:  # reported below, after every thread has ended
                errors.append(error)
                self._barrier.abort()

        threads = [threading.Thread(target=rank_main, args=(rank,)) for rank in range(self.world_size)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            first = next((e for e in errors if not isinstance(e, threading.BrokenBarrierError)), errors[0])
            raise first
        return results


class _Gather(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tensor: torch.Tensor, group: ThreadGroup, rank: int) -> torch.Tensor:
        ctx.group, ctx.rank, ctx.rows = group, rank, tensor.shape[0]
        return torch.cat(group.exchange(rank, tensor.detach()))

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        total = torch.stack(ctx.group.exchange(ctx.rank, grad.contiguous())).sum(dim=0)
        return total[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows], None, None


class RankCollective:
    """One rank's view of a :class:`ThreadGroup`, as :class:`model.loss.Collective`."""

    def __init__(self, group: ThreadGroup, rank: int):
        self.group, self.rank, self.world_size = group, rank, group.world_size

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """[R, ...] -> [N * R, ...] in rank order; the backward sums the ranks' gradients."""
        return _Gather.apply(tensor, self.group, self.rank)

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Element-wise sum over ranks, no gradient."""
        return torch.stack(self.group.exchange(self.rank, tensor.detach().clone())).sum(dim=0)
