"""utils.metrics.rank: golden numbers, chunking, cases worked by hand, ties, errors, and
broken rankings that the checks must reject."""

import functools

import numpy as np
import pytest
import torch
from conftest import assert_rel_close, load_golden

from utils.metrics import format_table, metrics_dict, rank


@pytest.fixture(scope="module")
def cases(golden):
    return load_golden(golden, "metrics.pt")


def loop_rank(similarity, q_pids, g_pids, max_rank=10):
    """The definitions written out: sort each row by (similarity descending, non-relevant
    before relevant on ties), then one query at a time."""
    relevant = g_pids[None, :] == q_pids[:, None]
    by_relevance = torch.sort(relevant.byte(), dim=1, stable=True).indices
    by_value = torch.sort(similarity.double().gather(1, by_relevance), dim=1, descending=True, stable=True)
    matches = relevant.gather(1, by_relevance.gather(1, by_value.indices))
    cmc, aps, inps = torch.zeros(max_rank, dtype=torch.float64), [], []
    for row in matches:
        positions = row.nonzero().flatten().double() + 1.0  # 1-based ranks of the relevant items
        cmc[int(positions[0]) - 1 :] += 1.0
        aps.append((torch.arange(1, len(positions) + 1) / positions).mean())
        inps.append(len(positions) / positions[-1])
    n = len(matches)
    return cmc * 100 / n, torch.stack(aps).mean() * 100, torch.stack(inps).mean() * 100


def random_problem(num_q, num_g, num_ids, seed, levels=None, dtype=torch.float32):
    """Random similarities and identities (every identity in both sides); ``levels`` rounds the
    similarities to that many values so that many ties occur."""
    gen = torch.Generator().manual_seed(seed)
    g_pids = torch.cat([torch.arange(num_ids), torch.randint(num_ids, (num_g - num_ids,), generator=gen)])
    q_pids = torch.cat([torch.arange(num_ids), torch.randint(num_ids, (num_q - num_ids,), generator=gen)])
    similarity = torch.rand(num_q, num_g, generator=gen, dtype=torch.float64)
    if levels is not None:
        similarity = (similarity * levels).floor() / levels
    return similarity.to(dtype), q_pids[torch.randperm(num_q, generator=gen)], g_pids


def assert_same(actual, expected, rtol=1e-6):
    for a, e in zip(actual, expected):
        assert_rel_close(a, e.to(a.dtype), rtol=rtol)


@pytest.mark.parametrize("case", range(3))
@pytest.mark.parametrize("task", ["t2i", "i2t"])
def test_golden(cases, case, task):
    c = cases[case]
    sim, q, g = c["similarity"], c["q_pids"], c["g_pids"]
    args = (sim, q, g) if task == "t2i" else (sim.t(), g, q)
    cmc, mAP, mINP = rank(*args, max_rank=10)
    assert cmc.dtype == mAP.dtype == mINP.dtype == torch.float32 and mAP.dim() == 0
    for name, value in zip(("cmc", "mAP", "mINP"), (cmc, mAP, mINP)):
        assert_rel_close(value, c[f"{task}_{name}"], rtol=1e-6)


@pytest.mark.parametrize("chunk_size", [1, 3, 7, 64, 1000])
def test_chunking_does_not_change_results(chunk_size):
    problem = random_problem(150, 60, 20, seed=1)
    assert_same(rank(*problem, chunk_size=chunk_size), rank(*problem, chunk_size=10**6))


def test_small_case_by_hand():
    # Query 0 (pid 5): gallery by descending similarity is items 3, 0, 4, 1, 5, 2 with pids
    # 2, 5, 1, 3, 5, 4 -> relevant at ranks 2 and 5. Query 1 (pid 1): relevant item 4 is first.
    similarity = torch.tensor([[0.8, 0.6, 0.4, 0.9, 0.7, 0.5], [0.1, 0.2, 0.3, 0.4, 0.9, 0.0]])
    g_pids = torch.tensor([5, 3, 4, 2, 1, 5])
    cmc, mAP, mINP = rank(similarity, torch.tensor([5, 1]), g_pids, max_rank=6)
    ap0, inp0 = (1 / 2 + 2 / 5) / 2, 2 / 5
    torch.testing.assert_close(cmc, torch.tensor([50.0, 100, 100, 100, 100, 100]))
    torch.testing.assert_close(mAP, torch.tensor((ap0 + 1.0) / 2 * 100))
    torch.testing.assert_close(mINP, torch.tensor((inp0 + 1.0) / 2 * 100))
    # max_rank beyond G: the tail of cmc is 100; identity labels of different integer types mix
    row = metrics_dict(*rank(similarity, torch.tensor([5, 1], dtype=torch.int32), g_pids))
    assert row == pytest.approx({"R1": 50.0, "R5": 100.0, "R10": 100.0, "mAP": 72.5, "mINP": 70.0})
    with pytest.raises(ValueError, match="max_rank >= 10"):
        metrics_dict(cmc, mAP, mINP)


def test_ties_rank_non_relevant_items_first():
    # Item 0 (relevant) ties item 1 (not): item 1 goes first, so relevant ranks are 2 and 3.
    cmc, mAP, mINP = rank(torch.tensor([[0.5, 0.5, 0.1]]), torch.tensor([3]), torch.tensor([3, 7, 3]), 3)
    torch.testing.assert_close(cmc, torch.tensor([0.0, 100, 100]))
    torch.testing.assert_close(mAP, torch.tensor((1 / 2 + 2 / 3) / 2 * 100))
    torch.testing.assert_close(mINP, torch.tensor(2 / 3 * 100))
    # all similarities equal: the worst case, relevant items at ranks 3 and 4
    cmc, mAP, mINP = rank(torch.zeros(1, 4), torch.tensor([3]), torch.tensor([3, 7, 3, 7]), 4)
    torch.testing.assert_close(cmc, torch.tensor([0.0, 0, 100, 100]))
    torch.testing.assert_close(mAP, torch.tensor((1 / 3 + 2 / 4) / 2 * 100))
    torch.testing.assert_close(mINP, torch.tensor(2 / 4 * 100))
    # signed zeros are equal values
    for values in ([0.0, -0.0], [-0.0, 0.0]):
        cmc, *_ = rank(torch.tensor([values]), torch.tensor([3]), torch.tensor([3, 7]), 1)
        assert float(cmc[0]) == 0.0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
@pytest.mark.parametrize("levels", [None, 7])
def test_matches_loop_on_random_data(dtype, levels):
    problem = random_problem(230, 90, 25, seed=2, levels=levels, dtype=dtype)
    sim, q, g = problem
    assert_same(rank(*problem, max_rank=12, chunk_size=50), loop_rank(*problem, max_rank=12))
    assert_same(rank(sim.t(), g, q, chunk_size=16), loop_rank(sim.t(), g, q))


def test_few_identities_many_tied_relevant_items():
    problem = random_problem(60, 300, 2, seed=6, levels=3)
    sim, q, g = problem
    assert_same(rank(*problem, chunk_size=16), loop_rank(*problem))
    assert_same(rank(sim.t(), g, q, chunk_size=16), loop_rank(sim.t(), g, q))


def test_memory_layouts_agree():
    sim, q, g = random_problem(80, 120, 10, seed=7, levels=9)
    expected = loop_rank(sim[:, ::2], q, g[::2])
    for layout in (sim[:, ::2].contiguous(), sim[:, ::2], sim[:, ::2].t().contiguous().t()):
        assert_same(rank(layout, q, g[::2], chunk_size=32), expected)


def test_query_without_match_is_an_error():
    similarity, q_pids, g_pids = random_problem(12, 8, 4, seed=3)
    q_pids[[2, 5]] = 99
    with pytest.raises(ValueError, match="2 of 12 queries have no relevant gallery item"):
        rank(similarity, q_pids, g_pids)


def test_bad_inputs_are_errors():
    similarity, q_pids, g_pids = random_problem(12, 8, 4, seed=4)
    with pytest.raises(ValueError, match="must be"):
        rank(similarity.t(), q_pids, g_pids)
    similarity[3, :2] = torch.tensor([float("inf"), -float("inf")])  # infinities are fine
    assert_same(rank(similarity, q_pids, g_pids), loop_rank(similarity, q_pids, g_pids))
    similarity[3, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        rank(similarity, q_pids, g_pids)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    problem = random_problem(300, 100, 30, seed=5, levels=11)
    result = rank(*(t.cuda() for t in problem), chunk_size=64)
    assert all(t.is_cuda for t in result)
    assert_same([t.cpu() for t in result], rank(*problem))


def test_format_table():
    text = format_table(
        [
            {"task": "t2i", "R1": 12.5571, "R5": 27.1, "R10": 35.0, "mAP": 11.4849, "mINP": 4.6},
            {"task": "i2t", "R1": 1, "R5": 2, "R10": 3, "mAP": 4, "mINP": 5},
        ]
    )
    lines = text.splitlines()
    assert [c.strip() for c in lines[1].strip("|").split("|")] == ["task", "R1", "R5", "R10", "mAP", "mINP"]
    assert [c.strip() for c in lines[3].strip("|").split("|")] == [
        "t2i",
        "12.557",
        "27.100",
        "35.000",
        "11.485",
        "4.600",
    ]
    assert [c.strip() for c in lines[4].strip("|").split("|")] == ["i2t", "1.000", "2.000", "3.000", "4.000", "5.000"]


# ---- the checks bite: a faithful sort-based copy passes them, each broken copy fails -------------


def check_rank(rank_fn):
    """A hand-worked case where mAP and mINP differ from R1, then agreement with loop_rank on
    random data with and without ties. ``rank_fn`` has the signature of utils.metrics.rank."""
    # Query 0 (pid 7): descending order is items 0, 3, 2, 5, 1, 4 with pids 7, 9, 8, 8, 7, 7: relevant
    # at ranks 1, 5 and 6, so R1 = 1 but AP = (1/1 + 2/5 + 3/6) / 3 = 1.9 / 3 and INP = 3/6.
    # Query 1 (pid 9): items 0 (pid 7), 3 (pid 9): its one relevant item at rank 2, AP = INP = 1/2.
    # max_rank 4: cmc = [50, 100, 100, 100]; mAP = (1.9/3 + 1/2) / 2 = 56.67; mINP = (1/2 + 1/2) / 2 = 50.
    similarity = torch.tensor([[0.9, 0.2, 0.5, 0.7, 0.1, 0.3], [0.6, 0.1, 0.2, 0.4, 0.3, 0.0]])
    cmc, mAP, mINP = rank_fn(similarity, torch.tensor([7, 9]), torch.tensor([7, 7, 8, 9, 7, 8]), max_rank=4)
    assert [float(v) for v in cmc] == pytest.approx([50.0, 100.0, 100.0, 100.0], rel=1e-6)
    assert float(mAP) == pytest.approx((1.9 / 3 + 0.5) / 2 * 100, rel=1e-6)
    assert float(mINP) == pytest.approx(50.0, rel=1e-6)
    for levels in (None, 7):
        problem = random_problem(60, 40, 12, seed=8, levels=levels)
        assert_same(rank_fn(*problem, max_rank=12), loop_rank(*problem, max_rank=12))


RANK_BUGS = ["ascending", "ap_over_gallery_size", "ap_within_max_rank", "inp_at_first_relevant", "ties_optimistic"]


def rank_copy(similarity, q_pids, g_pids, max_rank=10, *, bug=None):
    """One query at a time with numpy's lexsort: similarity descending, then non-relevant first."""
    sim, q, g = similarity.double().numpy(), q_pids.numpy(), g_pids.numpy()
    cmc, aps, inps = np.zeros(max_rank), [], []
    for row, pid in zip(sim, q):
        relevant = g == pid
        primary = row if bug == "ascending" else -row
        order = np.lexsort((~relevant if bug == "ties_optimistic" else relevant, primary))
        ranks = np.flatnonzero(relevant[order]) + 1.0  # 1-based ranks of the relevant items
        cmc[int(ranks[0]) - 1 :] += 1  # an empty slice when the first hit is beyond max_rank
        precision = np.arange(1, len(ranks) + 1) / ranks
        if bug == "ap_within_max_rank":
            aps.append(precision[ranks <= max_rank].sum() / max(1, (ranks <= max_rank).sum()))
        else:
            aps.append(precision.sum() / (len(g) if bug == "ap_over_gallery_size" else len(ranks)))
        inps.append(len(ranks) / (ranks[0] if bug == "inp_at_first_relevant" else ranks[-1]))
    return tuple(
        torch.tensor(value * 100, dtype=torch.float32) for value in (cmc / len(q), np.mean(aps), np.mean(inps))
    )


def test_rank_passes_the_check():
    check_rank(rank)


@pytest.mark.parametrize("bug", [None, *RANK_BUGS])
def test_the_rank_check_passes_a_faithful_copy_and_rejects_each_broken_one(bug):
    """bug=None: the sort-based copy passes (the check is not merely strict); any bug fails it."""
    broken = functools.partial(rank_copy, bug=bug)
    if bug is None:
        check_rank(broken)
    else:
        with pytest.raises(AssertionError):
            check_rank(broken)
