"""What several packages share. ``metrics`` (``rank``: R@K, mAP, mINP); ``run_folder`` (a run
folder's file names, the selection metric, reading config.yaml, progress.json and metrics.jsonl;
torch-free); ``io`` (atomic writes); ``distributed`` (torchrun); ``reproducibility`` (seeds,
kernels); ``gpu`` (why no GPU); ``cli`` (the model-source arguments, one-line errors);
``logger``. The report across run folders: ``python -m utils.report``."""
