"""MLM masking, samplers, torch datasets and loaders."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest
import torch
from data_fixtures import fixture_records, make_dataset

from configs.defaults import Config, DataConfig, ModelConfig, TrainConfig
from configs.errors import ConfigError
from datasets.bases import ImageTextMLMDataset, mask_tokens
from datasets.build import build_eval_loaders, build_train_loader, read_dataset
from datasets.readers import DataError, RetrievalDataset
from datasets.samplers import IdentitySampler, RandomSampler
from datasets.tokenizer import EOT_ID, MASK_ID, SOT_ID
from datasets.transforms import build_transform


def long_captions(count: int, length: int = 60, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.zeros(count, 77, dtype=torch.long)
    tokens[:, 0], tokens[:, length + 1] = SOT_ID, EOT_ID
    tokens[:, 1 : length + 1] = torch.randint(1, MASK_ID, (count, length), generator=gen)
    return tokens


def test_masking_rates_match_the_spec():
    tokens = long_captions(2000)
    gen = torch.Generator().manual_seed(1)
    masked, labels = zip(*(mask_tokens(row, gen) for row in tokens))
    masked, labels = torch.stack(masked), torch.stack(labels)
    eligible = (tokens > 0) & (tokens < MASK_ID)
    selected = labels > 0
    assert abs(selected.sum() / eligible.sum() - 0.15) < 0.005
    assert torch.equal(labels[selected], tokens[selected])  # labels are the original ids
    to_mask = (masked[selected] == MASK_ID).float().mean()
    kept = (masked[selected] == tokens[selected]).float().mean()
    assert abs(to_mask - 0.8) < 0.015 and abs(kept - 0.1) < 0.01
    assert abs(1 - to_mask - kept - 0.1) < 0.01  # replaced by a random id
    assert ((masked[selected] >= 1) & (masked[selected] <= MASK_ID)).all()
    assert torch.equal(masked[~selected], tokens[~selected])  # unselected tokens never change
    assert not selected[~eligible].any()  # never SOT, EOT or padding


def check_fallback(masker, rows: int = 1000) -> None:
    """One-token captions: position 1 is selected with p = 0.15 (then 80/10/10), else the
    fallback masks it always, so it is MASK with p = 0.85 + 0.15 x 0.8 = 0.97 (30 of 1000 not
    MASK on average, sd 5.4). Applying 80/10/10 on the fallback too gives 0.8 (200 not MASK):
    the bound 80 sits 9 sd from both."""
    tokens = long_captions(rows, length=1)
    gen = torch.Generator().manual_seed(2)
    not_masked = 0
    for row in tokens:
        masked, labels = masker(row, gen)
        assert labels.nonzero().flatten().tolist() == [1] and labels[1] == row[1]
        assert masked[0] == SOT_ID and masked[2] == EOT_ID and not masked[3:].any()
        not_masked += int(masked[1] != MASK_ID)
    assert not_masked <= 80, f"position 1 not MASK in {not_masked} of {rows} one-token captions"


def masking_with_random_fallback(tokens, generator):
    """Deliberately wrong: docs/method.md's masking, but the fallback at position 1 also goes
    through 80/10/10 instead of always becoming MASK."""
    tokens = tokens.long()
    draw = torch.rand(tokens.shape, generator=generator)
    selected = (tokens > 0) & (tokens < MASK_ID) & (draw < 0.15)
    if not selected.any():
        selected[1], draw[1] = True, torch.rand((), generator=generator) * 0.15
    within = draw / 0.15
    masked = tokens.clone()
    masked[selected & (within < 0.8)] = MASK_ID
    swap = selected & (within >= 0.8) & (within < 0.9)
    masked[swap] = torch.randint(1, MASK_ID, tokens.shape, generator=generator)[swap]
    return masked, torch.where(selected, tokens, torch.zeros_like(tokens))


def test_masking_falls_back_to_position_one():
    """When nothing was selected, position 1 always becomes MASK (and is labelled)."""
    check_fallback(mask_tokens)
    with pytest.raises(AssertionError, match="position 1 not MASK"):
        check_fallback(masking_with_random_fallback)


def test_random_sampler_every_index_once_and_epoch_dependent():
    sampler = RandomSampler(103, seed=3)
    first = [index for _, index in sampler]
    assert sorted(first) == list(range(103))
    sampler.set_epoch(1)
    keys = list(sampler)
    assert {epoch for epoch, _ in keys} == {1} and [index for _, index in keys] != first
    sampler.set_epoch(0)
    assert [index for _, index in sampler] == first  # a function of (seed, epoch) only


@pytest.mark.parametrize("world_size", [2, 3])
def test_distributed_random_sampler_shares_are_the_one_process_batches(world_size):
    """Global batch 12 over 103 samples: step s of every rank, concatenated in rank order,
    is step s of one process; the last batch (7 samples) loses 7 mod world_size of them."""
    one = [i for _, i in RandomSampler(103, seed=3)]
    samplers = [RandomSampler(103, seed=3, rank=r, world_size=world_size, batch_size=12) for r in range(world_size)]
    shares = [[i for _, i in sampler] for sampler in samplers]
    per_rank = 12 // world_size
    assert all(len(share) == len(sampler) == 8 * per_rank + 7 // world_size for share, sampler in zip(shares, samplers))
    for step in range(9):
        joined = [i for share in shares for i in share[step * per_rank : (step + 1) * per_rank]]
        expected = one[step * 12 : (step + 1) * 12]
        assert joined == (
            expected
            if step < 8
            else [i for r in range(world_size) for i in expected[r * (7 // world_size) : (r + 1) * (7 // world_size)]]
        )
    union = [index for share in shares for index in share]
    assert len(set(union)) == len(union) == 103 - 7 % world_size


def identity_pids(num_ids: int = 20) -> list:
    return [pid for pid in range(num_ids) for _ in range(2 + pid % 5)]  # 2..6 samples per identity


def test_identity_sampler_p_by_k_batches():
    pids = identity_pids()
    sampler = IdentitySampler(pids, batch_size=8, num_instance=2, seed=0)
    order = [index for _, index in sampler]
    assert len(order) == len(sampler) and len(order) % 8 == 0 and order
    for start in range(0, len(order), 8):
        counts = Counter(pids[index] for index in order[start : start + 8])
        assert len(counts) == 4 and set(counts.values()) == {2}


def check_padding(make_sampler) -> None:
    """Identities 0 and 2 have one sample for K = 2; all four identities have exactly one group
    of K, so every epoch (P = 2, two batches) holds each identity K times, and the one-sample
    identities as their single index repeated (padding draws with replacement)."""
    pids = [0, 1, 1, 2, 3, 3]
    for seed in range(4):
        order = [i for _, i in make_sampler(pids, batch_size=4, num_instance=2, seed=seed)]
        assert Counter(pids[i] for i in order) == {0: 2, 1: 2, 2: 2, 3: 2}, f"seed {seed}: {order}"
        assert Counter(order)[0] == Counter(order)[3] == 2


class SamplerDroppingSmallIdentities(IdentitySampler):
    """Deliberately wrong: identities with fewer than K samples dropped instead of padded."""

    def __iter__(self):
        small = {i for indices in self.by_identity.values() if len(indices) < self.num_instance for i in indices}
        return iter([key for key in super().__iter__() if key[1] not in small])


def test_identity_sampler_pads_small_identities():
    """Small identities are padded to K, never dropped."""
    check_padding(IdentitySampler)
    with pytest.raises(AssertionError):
        check_padding(SamplerDroppingSmallIdentities)


@pytest.mark.parametrize("world_size", [2, 3])
def test_distributed_identity_sampler_disjoint_and_structured(world_size):
    pids = identity_pids(40)
    samplers = [IdentitySampler(pids, 8, 2, seed=5, rank=r, world_size=world_size) for r in range(world_size)]
    shares = [[i for _, i in s] for s in samplers]
    assert len({len(share) for share in shares}) == 1 and len(shares[0]) > 0
    assert all(not set(a) & set(b) for a, b in itertools.combinations(shares, 2))  # disjoint
    for share in shares:
        for start in range(0, len(share), 8):
            assert set(Counter(pids[i] for i in share[start : start + 8]).values()) == {2}
    one = [i for _, i in IdentitySampler(pids, 8 * world_size, 2, seed=5)]  # the same global batch on one process
    assert one == [i for start in range(0, len(shares[0]), 8) for share in shares for i in share[start : start + 8]]


def test_samplers_reject_impossible_settings():
    with pytest.raises(ValueError, match="batch size 6 is not a multiple of num_instance 4"):
        IdentitySampler(identity_pids(), 6, 4)
    with pytest.raises(ValueError, match="rank 2 is not in"):
        RandomSampler(10, rank=2, world_size=2, batch_size=4)


def tiny_data_config(root, **data) -> Config:
    values = dict(root=str(root), dataset="CUHK-PEDES", batch_size=4, num_workers=0, augment=True)
    values.update(data)
    return Config(
        model=ModelConfig(pretrain="none", image_size=[32, 16]), data=DataConfig(**values), train=TrainConfig(seed=7)
    )


def test_training_items_are_seeded_by_epoch_and_index(tmp_path):
    make_dataset(tmp_path, "CUHK-PEDES")
    pairs = RetrievalDataset(tmp_path, "CUHK-PEDES").train_pairs()
    dataset = ImageTextMLMDataset(pairs, build_transform((32, 16), train=True), seed=7)
    item = dataset[(2, 5)]
    assert set(item) == {"pids", "image_ids", "images", "caption_ids", "mlm_ids", "mlm_labels"}
    assert item["images"].shape == (3, 32, 16) and item["caption_ids"].shape == (77,)
    again = dataset[(2, 5)]
    assert all(torch.equal(item[key], again[key]) for key in item)
    other_epochs = [dataset[(epoch, 5)] for epoch in range(3, 8)]
    assert any(not torch.equal(item["images"], other["images"]) for other in other_epochs)
    assert any(not torch.equal(item["mlm_ids"], other["mlm_ids"]) for other in other_epochs)


def batches(loader, epoch):
    loader.sampler.set_epoch(epoch)
    return list(loader)


def test_loader_batches_independent_of_worker_count(tmp_path):
    make_dataset(tmp_path, "CUHK-PEDES")
    read_dataset.cache_clear()
    serial, num_classes = build_train_loader(tiny_data_config(tmp_path))
    parallel, _ = build_train_loader(tiny_data_config(tmp_path, num_workers=2, persistent_workers=True))
    assert num_classes == 20  # model.id_classes=captions: 5 identities x 2 images x 2 captions
    for epoch in (0, 1):
        pairs = list(zip(batches(serial, epoch), batches(parallel, epoch), strict=True))
        assert pairs, f"no batches in epoch {epoch}"
        for a, b in pairs:
            assert a and a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)


def test_the_last_partial_batch_is_trained_unless_drop_last(tmp_path):
    """20 training pairs in batches of 6: the paper's code trains 6, 6, 6, 2; data.drop_last=true
    (one batch size for torch.compile) 6, 6, 6; and refuses a batch larger than the epoch."""
    make_dataset(tmp_path, "CUHK-PEDES")
    read_dataset.cache_clear()
    assert DataConfig().drop_last is False
    kept, _ = build_train_loader(tiny_data_config(tmp_path, batch_size=6))
    dropped, _ = build_train_loader(tiny_data_config(tmp_path, batch_size=6, drop_last=True))
    assert [len(batch["pids"]) for batch in batches(kept, 0)] == [6, 6, 6, 2]
    assert [len(batch["pids"]) for batch in batches(dropped, 0)] == [6, 6, 6] and len(dropped) == 3
    with pytest.raises(ConfigError, match="data.drop_last=true with 20 training pairs per rank"):
        build_train_loader(tiny_data_config(tmp_path, batch_size=32, drop_last=True))


def test_id_classes_follow_the_config_labels_stay_identities(tmp_path):
    make_dataset(tmp_path, "CUHK-PEDES")
    read_dataset.cache_clear()
    by_identity = tiny_data_config(tmp_path)
    by_identity.model.id_classes = "identities"
    loader, identities = build_train_loader(by_identity)
    by_caption = tiny_data_config(tmp_path)
    _, captions = build_train_loader(by_caption)
    assert (identities, captions) == (5, 20)
    labels = torch.cat([batch["pids"] for batch in batches(loader, 0)])
    assert sorted(set(labels.tolist())) == list(range(5))  # identity indices in both modes


def test_shared_masked_caption_is_the_mlm_input(tmp_path):
    """Sharing on: caption_ids == mlm_ids, and the labels mark exactly the positions that differ
    from the clean tokens, plus positions selected but kept (label == clean token there)."""
    make_dataset(tmp_path, "CUHK-PEDES")
    read_dataset.cache_clear()
    shared = tiny_data_config(tmp_path, share_masked_caption=True)
    clean = tiny_data_config(tmp_path, share_masked_caption=False)
    for a, b in zip(batches(build_train_loader(shared)[0], 0), batches(build_train_loader(clean)[0], 0), strict=True):
        assert torch.equal(a["caption_ids"], a["mlm_ids"])
        assert torch.equal(a["mlm_ids"], b["mlm_ids"]) and torch.equal(a["mlm_labels"], b["mlm_labels"])
        original, changed, labelled = b["caption_ids"], a["caption_ids"] != b["caption_ids"], a["mlm_labels"] > 0
        assert changed.any() and not (changed & ~labelled).any()  # every changed position is a target
        kept = labelled & ~changed
        assert torch.equal(a["mlm_labels"][labelled], original[labelled])  # targets are the clean tokens
        assert torch.equal(a["caption_ids"][kept], original[kept])


def test_identity_sampler_loader(tmp_path):
    make_dataset(tmp_path, "CUHK-PEDES")
    read_dataset.cache_clear()
    loader, _ = build_train_loader(tiny_data_config(tmp_path, sampler="identity", num_instance=2))
    epoch = batches(loader, 0)
    assert epoch, "the identity sampler gave no batches"
    for batch in epoch:
        assert set(Counter(batch["pids"].tolist()).values()) == {2}


def test_eval_loaders_cross_dataset(tmp_path):
    make_dataset(tmp_path, "CUHK-PEDES")
    make_dataset(tmp_path, "RSTPReid")
    read_dataset.cache_clear()
    cfg = tiny_data_config(tmp_path)
    loaders = build_eval_loaders(cfg, "RSTPReid", "val")
    pids, images = next(iter(loaders.images))
    assert images.shape[1:] == (3, 32, 16) and len(loaders.images.dataset) == 4
    pids, tokens = next(iter(loaders.texts))
    assert tokens.shape[1] == 77 and tokens[0, 0] == SOT_ID and len(loaders.texts.dataset) == 8


def test_missing_image_at_training_time_names_the_file(tmp_path):
    folder = make_dataset(tmp_path, "CUHK-PEDES")
    read_dataset.cache_clear()
    (folder / "imgs" / fixture_records("CUHK-PEDES")[0]["file_path"]).unlink()
    loader, _ = build_train_loader(tiny_data_config(tmp_path, num_workers=1, persistent_workers=False))
    with pytest.raises(DataError, match=r"image file .*train/1_0.jpg not found"):
        list(loader)
