"""Tar shards: the writer (refusals by record, resume, a process pool) and the streaming
training dataset (every pair once across ranks and workers, the file dataset's tensors)."""

from __future__ import annotations

import json
import tarfile
from collections import Counter
from pathlib import Path

import pytest
import torch
from data_fixtures import make_dataset, write_dataset

from configs.defaults import Config, DataConfig, LossConfig, ModelConfig, TrainConfig
from configs.errors import ConfigError
from dataset_tools.write_shards import main, write_shards
from datasets.bases import ImageTextMLMDataset
from datasets.build import build_train_loader
from datasets.readers import DataError, RetrievalDataset
from datasets.shards import MANIFEST, read_manifest, read_samples
from datasets.stream_plan import consumer_range
from datasets.streaming import ShardStream, StreamLoader
from datasets.transforms import build_transform

SIZE = (16, 8)


def corpus_records(images: int = 23, ids: bool = True) -> list:
    """Images with 1 to 3 distinct captions each (45 pairs for 23 images)."""
    records = []
    for index in range(images):
        captions = [f"person {index} caption {c}" for c in range(1 + index % 3)]
        records.append({"id": index // 2, "file_path": f"{index}.jpg", "captions": captions, "split": "train"})
    return records


def write_corpus(root: Path, records=None, name: str = "Corpus") -> Path:
    return write_dataset(root / name, "annotations.json", "file_path", records or corpus_records(), SIZE)


def stream(folder: Path, rank: int = 0, world: int = 1, batch: int = 3, **options) -> ShardStream:
    options = {"masked_language": False, "shuffle_buffer": 4, **options}
    transform = build_transform(SIZE, train=False)
    return ShardStream(read_manifest(folder), transform, batch, seed=5, rank=rank, world_size=world, **options)


def pair_of(item_ids: torch.Tensor, captions: torch.Tensor, row: int) -> tuple:
    return int(item_ids[row]), tuple(captions[row].tolist())


def epoch_pairs(folder: Path, epoch: int, world: int, workers: int) -> tuple:
    """(every pair the ranks' loaders yield in ``epoch``, batches per rank)."""
    seen, batches = Counter(), []
    for rank in range(world):
        loader = StreamLoader(stream(folder, rank, world), batch_size=3, num_workers=workers)
        loader.sampler.set_epoch(epoch)
        got = list(loader)
        assert len(got) == len(loader)
        batches.append(len(got))
        for batch in got:
            seen.update(pair_of(batch["image_ids"], batch["caption_ids"], row) for row in range(len(batch["pids"])))
    return seen, batches


def test_every_pair_once_across_two_ranks_and_two_workers(tmp_path):
    write_corpus(tmp_path, corpus_records(24))  # 48 pairs: 12 per rank x worker
    write_shards(tmp_path, "Corpus", tmp_path / "shards", shard_size=5)
    for epoch in (0, 1):
        seen, batches = epoch_pairs(tmp_path / "shards", epoch, world=2, workers=2)
        assert len(seen) == 48 and set(seen.values()) == {1}, seen
        assert batches == [8, 8]
    one, _ = epoch_pairs(tmp_path / "shards", 0, world=1, workers=0)
    assert one == seen


def test_block_split_epochs_tile_the_stream_so_no_pair_is_skipped(tmp_path):
    """data.shard_split=blocks, 45 pairs on 2 ranks: 22 per rank; the pair left over opens the next epoch."""
    write_corpus(tmp_path)
    write_shards(tmp_path, "Corpus", tmp_path / "shards", shard_size=4)
    blocks = [(epoch, rank, worker) for epoch in range(3) for rank in range(2) for worker in range(3)]
    ranges = sorted(consumer_range(epoch, 22, rank, 2, worker, 3, 3) for epoch, rank, worker in blocks)
    assert ranges[0][0] == 0 and ranges[-1][1] == 3 * 44
    assert all(left[1] == right[0] for left, right in zip(ranges, ranges[1:]))
    data = stream(tmp_path / "shards")
    first_pass = [pair.index for pair in data.read_range(0, 45)]
    assert sorted(first_pass) == list(range(45))
    second = [pair.index for pair in data.read_range(45, 90)]
    assert sorted(second) == list(range(45)) and second != first_pass  # a new shard order each pass


def test_streamed_pairs_equal_the_file_datasets(tmp_path):
    make_dataset(tmp_path, "CUHK-PEDES")
    write_shards(tmp_path, "CUHK-PEDES", tmp_path / "shards", shard_size=3, workers=2)
    transform = build_transform((32, 16), train=True)
    files = ImageTextMLMDataset(RetrievalDataset(tmp_path, "CUHK-PEDES").train_pairs(), transform, seed=5)
    shards = ShardStream(read_manifest(tmp_path / "shards"), transform, 4, seed=5, share_masked_caption=False)
    pairs = list(shards.read_range(0, len(files)))
    assert sorted(pair.index for pair in pairs) == list(range(len(files)))
    for pair in pairs[:7]:
        streamed, read = shards.item(pair, 3), files[(3, pair.index)]
        assert set(streamed) == set(read)
        assert all(torch.equal(streamed[key], read[key]) for key in read), pair.index


def test_a_truncated_shard_is_named(tmp_path):
    write_corpus(tmp_path)
    write_shards(tmp_path, "Corpus", tmp_path / "shards", shard_size=4)
    shard = tmp_path / "shards" / "shard-000002.tar"
    with tarfile.open(shard) as archive:
        cut = archive.getmembers()[3].offset_data + 10  # inside the second sample's image
    shard.write_bytes(shard.read_bytes()[:cut])
    with pytest.raises(DataError, match=f"shard-000002.tar: {cut} bytes; the manifest says"):
        stream(tmp_path / "shards")
    with pytest.raises(DataError, match=r"shard .*shard-000002.tar: unreadable at sample 1"):
        list(read_samples(shard))


def test_a_missing_image_is_named_and_nothing_is_lost(tmp_path):
    write_corpus(tmp_path)
    (tmp_path / "Corpus" / "imgs" / "7.jpg").unlink()
    with pytest.raises(DataError, match=r"4 whole shard.*kept.*\n  record 7: image file .*7.jpg not found") as refused:
        write_shards(tmp_path, "Corpus", tmp_path / "shards", shard_size=5)
    assert "no manifest" in str(refused.value) and not (tmp_path / "shards" / MANIFEST).exists()
    assert not (tmp_path / "shards" / "shard-000001.tar").exists()  # the shard holding record 7
    write_shards(tmp_path, "Corpus", tmp_path / "shards", shard_size=5, skip_bad=True)
    manifest = json.loads((tmp_path / "shards" / MANIFEST).read_text())
    assert [item["record"] for item in manifest["skipped"]] == [7]
    assert read_manifest(tmp_path / "shards").pairs == 45 - 2  # record 7's two captions, nothing else
    write_corpus(tmp_path)  # the image is back: a rerun without --skip-bad writes its shard again
    write_shards(tmp_path, "Corpus", tmp_path / "shards", shard_size=5)
    assert read_manifest(tmp_path / "shards").pairs == 45


def test_a_record_without_captions_is_refused_by_record(tmp_path):
    records = corpus_records()
    records[4]["captions"] = []
    del records[9]["id"]
    write_corpus(tmp_path, records)
    with pytest.raises(DataError, match="2 problem") as refused:
        write_shards(tmp_path, "Corpus", tmp_path / "shards")
    message = str(refused.value)
    assert "record 4: key 'captions' is an empty list" in message and "record 9: missing key 'id'" in message
    assert "nothing written" in message and not (tmp_path / "shards").exists()
    write_shards(tmp_path, "Corpus", tmp_path / "shards", skip_bad=True)
    assert read_manifest(tmp_path / "shards").pairs == 45 - 3  # records 4 (no caption) and 9 (2 captions)


def test_a_rerun_keeps_whole_shards_and_rewrites_the_others(tmp_path):
    write_corpus(tmp_path)
    out = tmp_path / "shards"
    write_shards(tmp_path, "Corpus", out, shard_size=4, workers=2)
    first = (out / MANIFEST).read_text()
    stamps = {path.name: path.stat().st_mtime_ns for path in out.glob("*.tar")}
    (out / "shard-000001.tar").unlink()
    damaged = out / "shard-000003.tar"
    damaged.write_bytes(damaged.read_bytes()[:-512] + bytes(512))  # same size, other bytes
    write_shards(tmp_path, "Corpus", out, shard_size=4)
    assert (out / MANIFEST).read_text() == first
    rewritten = {path.name for path in out.glob("*.tar") if path.stat().st_mtime_ns != stamps.get(path.name)}
    assert rewritten == {"shard-000001.tar", "shard-000003.tar"}


def loader_config(tmp_path, folder, names=("sdm", "mlm", "id")) -> Config:
    data = DataConfig(root=str(tmp_path), dataset="Corpus", batch_size=4, num_workers=0, shards=str(folder))
    return Config(
        model=ModelConfig(pretrain="none", image_size=list(SIZE), id_classes="identities"),
        loss=LossConfig(names=list(names)),
        data=data,
        train=TrainConfig(seed=3),
    )


def test_the_id_loss_is_refused_on_a_corpus_without_identities(tmp_path):
    write_corpus(tmp_path)
    write_shards(tmp_path, "Corpus", tmp_path / "shards", identities=False)
    with pytest.raises(ConfigError, match=r"'id'.*shards.*\(Corpus\) has no person identities.*loss.names=sdm\+mlm"):
        build_train_loader(loader_config(tmp_path, tmp_path / "shards"))
    loader, _ = build_train_loader(loader_config(tmp_path, tmp_path / "shards", ("sdm", "mlm")))
    batch = next(iter(loader))
    assert torch.equal(batch["pids"], batch["image_ids"])  # each image its own identity
    assert set(batch) == {"pids", "image_ids", "images", "caption_ids", "mlm_ids", "mlm_labels"}


def test_data_shards_builds_a_streaming_loader(tmp_path):
    write_corpus(tmp_path)
    main(["--out", str(tmp_path / "shards"), "--workers", "0", str(tmp_path), "Corpus"])
    loader, classes = build_train_loader(loader_config(tmp_path, tmp_path / "shards"))
    assert isinstance(loader, StreamLoader) and classes == 12 and len(loader) == 12  # 45 pairs, batches of 4
    loader.sampler.set_epoch(2)
    pids = torch.cat([batch["pids"] for batch in loader])
    assert len(pids) == 45 and int(pids.max()) == 11


def test_shards_are_plain_tar_in_webdataset_naming(tmp_path):
    """Any tar reader (webdataset's is Python's tarfile) sees KEY.json, KEY.jpg per record."""
    write_corpus(tmp_path)
    write_shards(tmp_path, "Corpus", tmp_path / "shards", shard_size=4)
    with tarfile.open(tmp_path / "shards" / "shard-000001.tar") as archive:
        names = archive.getnames()
        meta = json.loads(archive.extractfile("000000004.json").read())
    assert names == [f"00000000{index}.{kind}" for index in range(4, 8) for kind in ("json", "jpg")]
    assert meta == {"index": 4, "image": "4.jpg", "captions": ["person 4 caption 0", "person 4 caption 1"], "id": 2}


def test_persistent_workers_see_each_new_epoch(tmp_path):
    """set_epoch reaches workers started in an earlier epoch: their epoch 1 is a fresh loader's."""
    write_corpus(tmp_path)
    write_shards(tmp_path, "Corpus", tmp_path / "shards", shard_size=4)

    def image_ids(loader, epoch):
        loader.sampler.set_epoch(epoch)
        return torch.cat([batch["image_ids"] for batch in loader]).tolist()

    kept = StreamLoader(stream(tmp_path / "shards"), batch_size=3, num_workers=2, persistent_workers=True)
    first, second = image_ids(kept, 0), image_ids(kept, 1)
    fresh = StreamLoader(stream(tmp_path / "shards"), batch_size=3, num_workers=2)
    assert second == image_ids(fresh, 1) and second != first
