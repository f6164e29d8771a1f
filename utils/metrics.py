"""Retrieval metrics (docs/method.md, "Evaluation"): R@K, mAP and mINP without sorting the gallery.

For every query only the positions of its relevant gallery items matter. The position of a
relevant item ``j`` in the descending order is the number of gallery items ranked before it,
so it is counted directly (``num_relevant x G`` comparisons per query) instead of sorting the
whole row (``O(G log G)``); the metrics follow from the sorted relevant positions.

Ties (equal similarities) are broken pessimistically: a non-relevant item ranks before a
relevant one with the same similarity, so degenerate scores (e.g. all equal) give the
worst-case metrics rather than ones that depend on the gallery order. The reference's
unstable argsort leaves such ties arbitrary; its recorded golden cases contain none.
"""

from __future__ import annotations

import torch
from prettytable import PrettyTable

from utils.run_folder import METRICS

Tensor = torch.Tensor


def _relevant_lists(q_pids: Tensor, g_pids: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Gallery indices grouped by identity: (gallery order [G], start [Q], count [Q]) such that
    query q's relevant items are ``order[start[q] : start[q] + count[q]]`` (ascending)."""
    g_order = torch.argsort(g_pids, stable=True)
    pid_values, pid_counts = torch.unique_consecutive(g_pids[g_order], return_counts=True)
    slot = torch.searchsorted(pid_values, q_pids)
    return g_order, (torch.cumsum(pid_counts, 0) - pid_counts)[slot], pid_counts[slot]


def _at_or_above(values: Tensor, pivots: Tensor, rows_per_col: list[int]) -> Tensor:
    """counts[c, r] = #{g : values[c, g] >= pivots[c, r]} for r < R, c < rows_per_col[r].

    values: [C, G]; pivots: [C, R], rows sorted so that column r is needed by the first
    rows_per_col[r] rows only. Returns [C, R] int64; unneeded entries are 2G + 1."""
    counts = torch.full(pivots.shape, 2 * values.shape[1] + 1, dtype=torch.long, device=values.device)
    # comparisons written as 0.0 / 1.0 floats: summing those is much faster than counting
    # bools (which casts them to integers first) and exact while G < 2**24 in float32
    buffer = torch.empty_like(values, dtype=torch.float32 if values.shape[1] < 2**24 else torch.float64)
    pivot_cols = pivots.t().contiguous()  # unit stride along the rows for column-major values
    for col, rows in enumerate(rows_per_col):
        at_or_above = torch.ge(values[:rows], pivot_cols[col, :rows, None], out=buffer[:rows])
        counts[:rows, col] = at_or_above.sum(1).long()
    return counts


def _sorted_positions(counts: Tensor) -> Tensor:
    """[C, R] counts of items at or above each relevant item -> its 0-based positions, sorted.

    Ties are pessimistic: m relevant items sharing a similarity n - 1 items reach (so equal
    counts n) take the positions n - m .. n - 1, after the non-relevant items they tie with.
    Relevant items with different similarities have different counts."""
    counts = counts.sort(dim=1).values
    group_end = torch.searchsorted(counts, counts, right=True)
    return counts - group_end + torch.arange(counts.shape[1], device=counts.device)


def _take_rows(matrix: Tensor, rows: Tensor) -> Tensor:
    """matrix[rows] ([len(rows), G]); a column-major matrix (e.g. ``similarity.t()``) is
    gathered along its contiguous dimension and stays column-major."""
    if matrix.stride(1) == 1:
        return matrix.index_select(0, rows)
    return matrix.t().index_select(1, rows).t()


def _has_nan(values: Tensor) -> bool:
    """NaN anywhere in values: a row sum (cheap) is NaN then, or with both +inf and -inf."""
    if not values.is_floating_point():
        return False
    row_sums = values.sum(1)
    return bool(torch.isnan(row_sums).any()) and bool(torch.isnan(values).any())


def _check_inputs(similarity: Tensor, q_pids: Tensor, g_pids: Tensor, max_rank: int, chunk_size: int) -> None:
    """ValueError on mismatched shapes, empty inputs, bad sizes or queries without a match."""
    if similarity.dim() != 2 or similarity.shape != (q_pids.numel(), g_pids.numel()):
        raise ValueError(
            f"similarity {tuple(similarity.shape)} must be [len(q_pids), len(g_pids)] = "
            f"[{q_pids.numel()}, {g_pids.numel()}]"
        )
    if similarity.numel() == 0 or max_rank < 1 or chunk_size < 1:
        raise ValueError("need at least one query and one gallery item, max_rank >= 1, chunk_size >= 1")
    missing = int((~torch.isin(q_pids, g_pids)).sum())
    if missing:
        raise ValueError(
            f"{missing} of {q_pids.numel()} queries have no relevant gallery item "
            "(AP and INP are undefined for them); remove them before ranking"
        )


def _chunk_sums(positions: Tensor, num_rel: Tensor, max_rank: int) -> tuple[Tensor, Tensor, Tensor]:
    """positions [C, R] (0-based, ascending, padding last) -> float64 sums over the chunk's
    queries of the top-k hit indicators [max_rank], of AP and of INP."""
    ranks = positions.double() + 1.0  # 1-based
    found = torch.arange(1, ranks.shape[1] + 1, dtype=torch.float64, device=ranks.device)
    precision = torch.where(found <= num_rel[:, None], found / ranks, 0.0)
    hits = (ranks[:, :1] <= torch.arange(1, max_rank + 1, device=ranks.device)).sum(0)
    last = ranks.gather(1, num_rel[:, None] - 1).squeeze(1)
    return hits.double(), (precision.sum(1) / num_rel).sum(), (num_rel / last).sum()


@torch.no_grad()
def rank(
    similarity: Tensor, q_pids: Tensor, g_pids: Tensor, max_rank: int = 10, chunk_size: int = 256
) -> tuple[Tensor, Tensor, Tensor]:
    """CMC, mAP and mINP (percent) of ranking the gallery by descending similarity.

    similarity: [Q, G] (any device, any real dtype); q_pids: [Q], g_pids: [G] identity labels.
    Returns ``cmc`` [max_rank] (cmc[k]: share of queries with a relevant item in the top
    k + 1), ``mAP`` and ``mINP`` (0-dim): float32 on similarity's device, accumulated in
    float64. Queries go chunk_size at a time, so intermediates are O(chunk_size x G) (the
    default suits a CPU cache; larger chunks help little). The cost is about
    ``Q x mean(num_relevant) x G`` comparisons instead of a sort of every row.
    Raises ValueError if a query has no relevant gallery item or similarity holds NaN.
    """
    device, pid_dtype = similarity.device, torch.promote_types(q_pids.dtype, g_pids.dtype)
    q_pids, g_pids = (pids.to(device, pid_dtype).flatten() for pids in (q_pids, g_pids))
    _check_inputs(similarity, q_pids, g_pids, max_rank, chunk_size)
    g_order, rel_start, rel_count = _relevant_lists(q_pids, g_pids)
    totals = [torch.zeros(max_rank, dtype=torch.float64, device=device), 0.0, 0.0]
    for start in range(0, q_pids.numel(), chunk_size):
        # a contiguous block of queries (cache-friendly reads), most relevant items first
        block = rel_count[start : start + chunk_size]
        rows = torch.argsort(block, descending=True, stable=True) + start
        values = _take_rows(similarity, rows)
        if _has_nan(values):
            raise ValueError("similarity contains NaN")
        num_rel, first = rel_count[rows], rel_start[rows, None]
        slots = torch.arange(int(num_rel[0]), device=device)
        valid = slots < num_rel[:, None]
        pivots = values.gather(1, g_order[torch.where(valid, first + slots, first)])
        positions = _sorted_positions(_at_or_above(values, pivots, valid.sum(0).tolist()))
        totals = [total + part for total, part in zip(totals, _chunk_sums(positions, num_rel, max_rank))]
    return tuple(torch.as_tensor(total * (100.0 / q_pids.numel())).float() for total in totals)


def metrics_dict(cmc: Tensor, mAP: Tensor, mINP: Tensor) -> dict[str, float]:
    """{'R1', 'R5', 'R10', 'mAP', 'mINP'} as Python floats; cmc needs at least 10 entries."""
    if cmc.numel() < 10:
        raise ValueError(f"cmc has {cmc.numel()} entries; R10 needs max_rank >= 10")
    return dict(zip(METRICS, (float(cmc[0]), float(cmc[4]), float(cmc[9]), float(mAP), float(mINP))))


def format_table(rows: list[dict]) -> str:
    """A prettytable with columns task, R1, R5, R10, mAP, mINP; figures formatted '.3f'.

    rows: dicts with a 'task' name (e.g. 't2i', 'i2t') and the keys of ``metrics_dict``."""
    table = PrettyTable(["task", *METRICS])
    for row in rows:
        table.add_row([row["task"], *(float(row[name]) for name in METRICS)])
    for name in METRICS:
        table.custom_format[name] = lambda _field, value: f"{value:.3f}"
    return table.get_string()
