"""One fp32 training step per case, alone or under torchrun (gloo), for tests/test_ddp.py.

``python tests/ddp_step.py DATA_ROOT OUT.pt`` or
``python -m torch.distributed.run --nproc_per_node=N tests/ddp_step.py DATA_ROOT OUT.pt [key=value ...]``.
For every case of :data:`CASES` (caption mode x sampler) it builds the run as train.py does
(seeded model, the rank's share of the first global batch, DDP and the global-batch losses
under torchrun), takes one step's loss terms and metrics and, after DDP's averaging, every
parameter's gradient; rank 0 saves them to OUT.pt.
"""
from __future__ import annotations

import sys

import torch
from torch.nn.parallel import DistributedDataParallel

from configs.loader import load_config
from datasets.build import build_train_loader
from model.build import build_criterion, build_model
from utils.distributed import ProcessGroupCollective, cleanup, init_distributed

TINY = ["model.pretrain=none", "model.image_size=[32,16]", "model.patch_size=8", "model.embed_dim=64",
        "model.vision_width=64", "model.vision_layers=1", "model.text_width=64", "model.text_layers=1",
        "model.cmt_depth=1", "model.context_length=32", "data.text_length=32", "data.dataset=CUHK-PEDES",
        "data.batch_size=12", "data.num_instance=2", "data.num_workers=0", "train.precision=fp32",
        "train.device=cpu", "model.id_classes=identities", "data.augment=true"]
CASES = {f"{sampler}, share_masked_caption={shared}": [f"data.sampler={sampler}",
                                                          f"data.share_masked_caption={shared}"]
         for sampler in ("random", "identity") for shared in ("true", "false")}


def one_step(root: str, overrides: list, info) -> dict:
    cfg = load_config(None, [*TINY, f"data.root={root}", *overrides])
    torch.manual_seed(cfg.train.seed)
    loader, num_classes = build_train_loader(cfg, info.rank, info.world_size)
    loader.sampler.set_epoch(1)
    model = build_model(cfg, num_classes)
    criterion = build_criterion(cfg)
    if info.distributed:
        if cfg.train.global_batch_losses:
            criterion.collective = ProcessGroupCollective()
        model = DistributedDataParallel(model)
    batch = next(iter(loader))
    terms, metrics = criterion(model(batch), batch)
    sum(terms.values()).backward()
    module = model.module if info.distributed else model
    return {"terms": {name: value.detach() for name, value in terms.items()},
            "metrics": dict(metrics), "pids": batch["pids"],
            "grads": {name: p.grad.detach().clone() for name, p in module.named_parameters() if p.grad is not None}}


def main(root: str, output: str, *extra: str) -> None:
    info = init_distributed("cpu")
    results = {name: one_step(root, [*overrides, *extra], info) for name, overrides in CASES.items()}
    if info.is_main:
        torch.save(results, output)
    cleanup()


if __name__ == "__main__":
    main(*sys.argv[1:])
