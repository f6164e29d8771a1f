"""Evaluate a run folder, a checkpoint (ours or the reference's) or bare CLIP weights.

    python test.py runs/CUHK-PEDES/<run>                       # its config and best.pth
    python test.py runs/CUHK-PEDES/<run> --which last eval.cross_domain=[ICFG-PEDES,RSTPReid]
    python test.py reference_best.pth --config configs/rstpreid.yaml eval.split=val
    python test.py data/ViT-B-16.pt data.dataset=CUHK-PEDES    # zero-shot CLIP

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
from configs.loader import ConfigError, build_parser
from processor.evaluator import evaluate, results_table
from processor.processor import eval_targets
from utils.inference import model_for, resolve_source
from utils.logger import setup_logging

logger = logging.getLogger("test")


def parser() -> argparse.ArgumentParser:
    result = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=build_parser().epilog)
    result.add_argument("weights", help="run folder, checkpoint file, or CLIP weights")
    result.add_argument("--config", metavar="FILE", default=None,
                        help="YAML config (default: the run folder's config.yaml, else the defaults)")
    result.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides")
    result.add_argument("--which", choices=("best", "last"), default="best", help="checkpoint of a run folder")
    result.add_argument("--output", default=None, help="metrics JSON (default: beside the weights)")
    return result


def resolve(args) -> tuple[Config, Path, Path]:
    """(config, weights file, output JSON) for a run folder or a weights file."""
    cfg, weights = resolve_source(args.weights, args.config, args.overrides, args.which)
    default = (Path(args.weights) / f"test_metrics_{args.which}.json" if Path(args.weights).is_dir()
               else weights.with_name(weights.name + ".metrics.json"))
    return cfg, weights, Path(args.output) if args.output else default


def main(argv: Optional[Sequence[str]] = None) -> int:
    cli = parser()
    args = cli.parse_intermixed_args(argv)
    setup_logging()
    try:
        cfg, weights, output = resolve(args)
    except (ConfigError, FileNotFoundError) as error:
        cli.error(str(error))
    loaded = model_for(cfg, weights)
    results: Dict[str, dict] = {}
    for loaders in eval_targets(cfg):
        metrics = evaluate(loaded.model, loaders, loaded.device, loaded.autocast, cfg.eval.i2t, cfg.eval.query_chunk,
                           progress=True)
        results[loaders.dataset] = {"split": loaders.split, **metrics}
        print(f"{loaders.dataset} ({loaders.split}) - {weights}\n{results_table(metrics)}")
    output.write_text(json.dumps({"weights": str(weights), "results": results}, indent=2))
    logger.info("metrics written to %s", output)
    return 0


if __name__ == "__main__":
    sys.exit(main())

