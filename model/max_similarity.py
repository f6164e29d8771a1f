"""Cross-sample max-pooled token similarity without the [A, B, L, K] tensor in memory.

EFA's set similarity needs, for every pair of samples (a, b) and every token x of a,
the best match among the tokens y of b: ``M[a, b, x] = max_y <X[a, x], C[b, y]>``.
The straightforward broadcast keeps a [A, B, L, K] product (plus broadcast copies of
the [L, D] / [K, D] operands) alive for the backward pass: about 6 GB at the paper's
batch. Here the forward runs one GEMM per block of samples and keeps only the
maxima and their argmax; the backward routes each gradient to the single token pair
that won the max (exactly what autograd does through ``torch.max``): two weighted
gathers (``embedding_bag``) over ``A * L * B`` rows instead of two dense products of
``A * L * B * K`` entries.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from configs.defaults import EfaConfig


def _block_rows(num_rows: int, row_cost: int, budget_elems: int) -> int:
    """How many leading-dim rows fit in one block of at most ``budget_elems`` elements."""
    return max(1, min(num_rows, budget_elems // max(row_cost, 1)))


class _MaxDotProduct(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, c: torch.Tensor, budget_elems: int):
        with torch.autocast(x.device.type, enabled=False):  # a loss: float32 throughout
            return _MaxDotProduct._forward(ctx, x, c, budget_elems)

    @staticmethod
    def _forward(ctx, x: torch.Tensor, c: torch.Tensor, budget_elems: int):
        num_a, len_x, dim = x.shape
        num_b, len_c, _ = c.shape
        c_flat = c.reshape(num_b * len_c, dim)
        values = x.new_empty(num_a, len_x, num_b)
        argmax = torch.empty(num_a, len_x, num_b, dtype=torch.long, device=x.device)
        rows = _block_rows(num_a, len_x * num_b * len_c, budget_elems)
        for start in range(0, num_a, rows):
            block = x[start : start + rows]
            sim = block.reshape(-1, dim) @ c_flat.T  # [rows * L, B * K], one GEMM
            sim = sim.view(block.shape[0], len_x, num_b, len_c)
            torch.max(sim, dim=-1, out=(values[start : start + rows], argmax[start : start + rows]))
        ctx.save_for_backward(x, c, argmax)
        return values

    @staticmethod
    def backward(ctx, grad_values: torch.Tensor):
        x, c, argmax = ctx.saved_tensors
        num_a, len_x, dim = x.shape
        num_b, len_c, _ = c.shape
        # Each (a, x, b) sends its gradient to one column of c: row b * K + argmax.
        cols = (torch.arange(num_b, device=x.device) * len_c + argmax).reshape(num_a * len_x, num_b)
        weights = grad_values.reshape(num_a * len_x, num_b).to(x.dtype)
        grad_x = grad_c = None
        if ctx.needs_input_grad[0]:
            # grad_x[a, x] = sum_b grad[a, x, b] * c[b, argmax[a, x, b]]: fixed bags of B rows.
            grad_x = F.embedding_bag(cols, c.reshape(-1, dim), mode="sum", per_sample_weights=weights)
            grad_x = grad_x.view_as(x)
        if ctx.needs_input_grad[1]:
            # grad_c[b, y] = sum of grad * x over the (a, x) that chose (b, y): bags sorted by column.
            flat_cols = cols.reshape(-1)
            order = torch.argsort(flat_cols)
            counts = torch.bincount(flat_cols, minlength=num_b * len_c)
            offsets = torch.cumsum(counts, 0) - counts
            grad_c = F.embedding_bag(
                torch.div(order, num_b, rounding_mode="floor"),
                x.reshape(-1, dim),
                offsets,
                mode="sum",
                per_sample_weights=weights.reshape(-1)[order],
            )
            grad_c = grad_c.view_as(c)
        return grad_x, grad_c, None


def max_dot_product(x: torch.Tensor, c: torch.Tensor, block_elems: int = EfaConfig.block_elems) -> torch.Tensor:
    """``M[a, x, b] = max_y <x[a, x], c[b, y]>`` for every sample pair, differentiable.

    Args:
        x: [A, L, D] token sets to pool over later.
        c: [B, K, D] token sets searched for the best match.
        block_elems: upper bound on the elements of one block of the similarity
            product (the only large temporary); 2**22 floats = 16 MiB.
    Returns:
        [A, L, B] maxima; note the sample axis of ``c`` comes last.
    """
    if x.dim() != 3 or c.dim() != 3 or x.shape[-1] != c.shape[-1]:
        raise ValueError(f"expected x [A, L, D] and c [B, K, D], got {tuple(x.shape)} and {tuple(c.shape)}")
    return _MaxDotProduct.apply(x.contiguous(), c.contiguous(), block_elems)
