"""Every batch-coupled loss split over N = 2, 3, 4 ranks is the one-process loss.

Under torchrun each rank scores its own rows against the gathered columns of the whole batch,
its rows starting at rank x R. Here the ranks are threads of this process (tests/thread_group.py:
the true shards on every gather, the gradient summed back to the owner as the real all-gather's
backward does), each running the training criterion (``model.loss.FMFALoss`` with a collective)
on its share of one float64 batch and backpropagating its own terms. As on the real path:

- every rank's term value is the one-process loss of the whole batch (the mean of the shares);
- the gradient each rank's inputs receive, divided by N (DDP averages the ranks' gradients), is
  the one-process gradient of those rows.

float64 keeps both at rounding level (1e-9 relative), far below what a wrong row offset moves;
MLM's share of the global mean (its count over the ranks' counts) is a float32 ratio in
``FMFALoss.global_share``, so the case with MLM compares to 1e-6.
"""

from __future__ import annotations

from typing import Dict, List, Tuple

import pytest
import torch
from thread_group import RankCollective, ThreadGroup

from configs.defaults import AsdmConfig, EfaConfig
from model.loss import FMFALoss

BATCH, WIDTH, TOKENS, PATCHES, VOCAB = 12, 8, 5, 6, 11
# Identities repeat within and across every split of 12 rows into 2, 3 or 4 ranks.
PIDS = torch.tensor([0, 1, 2, 0, 3, 1, 2, 4, 0, 3, 4, 1])
FLOATS = ("image_feats", "text_feats", "image_tokens", "text_tokens", "image_logits", "text_logits")
CASES = {  # name -> (losses, A-SDM mode, relative tolerance)
    "sdm": (["sdm"], "cosine", 1e-9),
    "a-sdm cosine": (["a-sdm"], "cosine", 1e-9),
    "a-sdm probability": (["a-sdm"], "probability", 1e-9),
    "itc": (["itc"], "cosine", 1e-9),
    "cmpm": (["cmpm"], "cosine", 1e-9),
    "efa": (["efa"], "cosine", 1e-9),
    # the recipe's set with the per-sample losses too (MLM: ranks hold different token counts)
    "a-sdm+mlm+id+efa": (["a-sdm", "mlm", "id", "efa"], "probability", 1e-6),
}


def global_batch(seed: int = 0) -> Tuple[Dict[str, torch.Tensor], Dict[str, torch.Tensor], List[int]]:
    """The model's outputs on 12 samples (float64), the batch's pids and MLM scores per sample
    (1 to 3 labelled tokens each, so ranks hold different counts)."""
    gen = torch.Generator().manual_seed(seed)
    outputs = {
        "image_feats": torch.randn(BATCH, WIDTH, generator=gen),
        "text_feats": torch.randn(BATCH, WIDTH, generator=gen),
        "image_tokens": torch.randn(BATCH, 1 + PATCHES, WIDTH, generator=gen),
        "text_tokens": torch.randn(BATCH, TOKENS, WIDTH, generator=gen),
        "image_logits": torch.randn(BATCH, 5, generator=gen),
        "text_logits": torch.randn(BATCH, 5, generator=gen),
    }
    outputs = {name: value.double() for name, value in outputs.items()}
    masked = [int(n) for n in torch.randint(1, 4, (BATCH,), generator=gen)]
    outputs["mlm_scores"] = torch.randn(sum(masked), VOCAB, generator=gen).double()
    outputs["mlm_labels"] = torch.randint(1, VOCAB, (sum(masked),), generator=gen)
    return outputs, {"pids": PIDS.clone()}, masked


def rows_of(outputs: Dict[str, torch.Tensor], masked: List[int], start: int, stop: int) -> Dict[str, torch.Tensor]:
    """Samples start..stop-1 of the outputs, as leaves of a rank's own graph."""
    first, last = sum(masked[:start]), sum(masked[:stop])
    share = {name: outputs[name][start:stop] for name in FLOATS}
    share["mlm_scores"] = outputs["mlm_scores"][first:last]
    share["mlm_labels"] = outputs["mlm_labels"][first:last]
    return {
        name: value.clone().requires_grad_() if value.is_floating_point() else value.clone()
        for name, value in share.items()
    }


def criterion(names: List[str], mode: str, collective=None) -> FMFALoss:
    weights = {"efa": 2.0, "id": 0.5}  # not 1, so a weight applied twice or never shows
    asdm = AsdmConfig(factor=10.0, mode=mode)
    return FMFALoss(names, weights, logit_scale=50.0, asdm=asdm, efa=EfaConfig(), collective=collective)


def input_grads(outputs: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    return {name: value.grad for name, value in outputs.items() if value.is_floating_point() and value.grad is not None}


def one_process(names: List[str], mode: str, outputs, batch, masked) -> Tuple[Dict[str, torch.Tensor], Dict]:
    leaves = rows_of(outputs, masked, 0, BATCH)
    terms, _ = criterion(names, mode)(leaves, batch)
    sum(terms.values()).backward()
    return {name: term.detach() for name, term in terms.items()}, input_grads(leaves)


def sharded(names: List[str], mode: str, outputs, batch, masked, ranks: int) -> List[Tuple[Dict, Dict]]:
    """Every rank's (term values, gradients of its inputs) after its own backward."""
    rows = BATCH // ranks

    def rank_step(collective: RankCollective):
        start = collective.rank * rows
        leaves = rows_of(outputs, masked, start, start + rows)
        own_batch = {"pids": batch["pids"][start : start + rows]}
        terms, _ = criterion(names, mode, collective)(leaves, own_batch)
        sum(terms.values()).backward()
        return {name: term.detach() for name, term in terms.items()}, input_grads(leaves)

    return ThreadGroup(ranks).run(rank_step)


def assert_sharded_equals_one_process(names: List[str], mode: str, ranks: int, rtol: float) -> None:
    outputs, batch, masked = global_batch()
    expected_terms, expected_grads = one_process(names, mode, outputs, batch, masked)
    results = sharded(names, mode, outputs, batch, masked, ranks)
    for rank, (terms, _) in enumerate(results):
        assert terms.keys() == expected_terms.keys()
        for name, value in terms.items():
            torch.testing.assert_close(
                value, expected_terms[name], rtol=rtol, atol=0, msg=lambda m: f"rank {rank}/{ranks}, {name}: {m}"
            )
    assert {name for _, grads in results for name in grads} == set(expected_grads)
    for name, expected in expected_grads.items():
        averaged = torch.cat([grads[name] for _, grads in results]) / ranks  # DDP's mean over ranks
        scale = expected.abs().max()
        assert scale > 0, name
        torch.testing.assert_close(
            averaged, expected, rtol=0, atol=rtol * float(scale), msg=lambda m: f"{ranks} ranks, d/d {name}: {m}"
        )


@pytest.mark.parametrize("ranks", [2, 3, 4])
@pytest.mark.parametrize("case", list(CASES))
def test_sharded_loss_equals_the_one_process_loss(case, ranks):
    assert_sharded_equals_one_process(*CASES[case][:2], ranks, rtol=CASES[case][2])


def test_the_thread_group_gathers_true_shards_and_sums_gradients_to_their_owner():
    """The stand-in for torchrun itself: rank r's gather is every rank's tensor in rank order,
    and a rank's gradient is the sum over ranks of what each one's loss sends to its rows."""
    coefficients = torch.arange(1.0, 33.0).reshape(4, 8)  # rank k's loss: sum_j c[k, j] * sum(row j)

    def rank_step(collective: RankCollective):
        own = torch.full((2, 3), float(collective.rank), requires_grad=True)
        gathered = collective.gather(own)
        (coefficients[collective.rank, :, None] * gathered).sum().backward()
        return gathered.detach(), own.grad, collective.sum(torch.tensor(float(collective.rank)))

    results = ThreadGroup(4).run(rank_step)
    owners = torch.arange(4.0).repeat_interleave(2)[:, None].expand(8, 3)
    received = coefficients.sum(dim=0)  # row j's gradient: summed over the 4 ranks' losses
    for rank, (gathered, grad, total) in enumerate(results):
        assert torch.equal(gathered, owners) and float(total) == 0 + 1 + 2 + 3
        assert torch.equal(grad, received[2 * rank : 2 * rank + 2, None].expand(2, 3)), rank
