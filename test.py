"""Evaluate a run folder, a checkpoint (ours or the reference's) or bare CLIP weights.

    python test.py runs/CUHK-PEDES/<run>                       # its config and best.pth
    python test.py runs/CUHK-PEDES/<run> --which last eval.cross_domain=[ICFG-PEDES,RSTPReid]
    python test.py reference_best.pth --config configs/rstpreid.yaml eval.split=val
    python test.py data/ViT-B-16.pt data.dataset=CUHK-PEDES    # zero-shot CLIP
    python test.py runs/CUHK-PEDES/<run> eval.split=test       # a run selected on val, on test

Prints one table per dataset and writes the metrics as JSON (``--output``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Dict, Optional, Sequence

from configs.defaults import Config
from configs.errors import raise_all
from configs.irra_flags import refuse_foreign_flags
from datasets.readers import check_dataset_files
from processor.evaluator import eval_targets, evaluate, results_table
from processor.preflight import eval_datasets
from serving.inference import check_weights, default_config_hint, model_for, source_config
from utils.cli import add_model_source, describe, report_user_errors
from utils.io import write_text_atomic
from utils.logger import setup_logging

logger = logging.getLogger("test")


def parser() -> argparse.ArgumentParser:
    result = argparse.ArgumentParser(description=describe(__doc__))
    add_model_source(result)
    result.add_argument(
        "--output", default=None, help="metrics JSON (default: beside the weights, named by weights, dataset and split)"
    )
    return result


def default_output(source: Path, weights: Path, which: str, cfg: Config) -> Path:
    """Named by what was evaluated, so no two evaluations overwrite each other:
    ``test_<weights>_<datasets>_<split>[_t2i+i2t].json`` beside the weights, where ``<weights>``
    is ``best`` or ``last`` for a run folder and the file's stem otherwise; ``_t2i+i2t`` marks
    an evaluation with ``eval.i2t=true`` (both directions)."""
    datasets = "+".join([cfg.data.dataset, *cfg.eval.cross_domain])
    tasks = "_t2i+i2t" if cfg.eval.i2t else ""
    name = which if source.is_dir() else weights.stem
    return weights.with_name(f"test_{name}_{datasets}_{cfg.eval.split}{tasks}.json")


@report_user_errors
def main(argv: Optional[Sequence[str]] = None) -> int:
    programs_parser = parser()
    refuse_foreign_flags(programs_parser, sys.argv[1:] if argv is None else argv)  # IRRA's --config_file: say what
    args = programs_parser.parse_intermixed_args(argv)
    setup_logging()
    cfg, weights = source_config(args.source, args.config, args.overrides, args.which)
    data_checks = [lambda name=name: check_dataset_files(cfg.data.root, name) for name in eval_datasets(cfg)]
    with default_config_hint(args.source, args.config):
        raise_all([lambda: check_weights(args.source, weights), *data_checks])  # every missing input at once
        targets = eval_targets(cfg)  # the annotations are read (and checked) before the weights load
        loaded = model_for(cfg, weights)
    output = Path(args.output) if args.output else default_output(Path(args.source), weights, args.which, cfg)
    results: Dict[str, dict] = {}
    for loaders in targets:
        metrics = evaluate(loaded.model, loaders, loaded.device, loaded.autocast, cfg.eval, progress=True)
        results[loaders.dataset] = {"split": loaders.split, **metrics}
        print(f"{loaders.dataset} ({loaders.split}) - {weights}\n{results_table(metrics)}")
    write_text_atomic(output, json.dumps({"weights": str(weights), "results": results}, indent=2))
    logger.info("metrics written to %s", output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
