"""The names of a run folder's files, declared once. Torch-free, so that the programs that only
read run folders (``python -m utils.report``) start without importing torch."""

CONFIG_FILE = "config.yaml"  # the resolved config; test.py rebuilds the model from it
METRICS_FILE = "metrics.jsonl"  # one evaluation row per line
LOG_FILE = "train.log"
TENSORBOARD_DIR = "tensorboard"
PROGRESS_FILE = "progress.json"  # {"epoch": completed epochs, "epochs": planned, "best": {...}}
LAST, BEST = "last.pth", "best.pth"  # everything to continue identically; the best epoch's weights
# Where a run is trained, not what is trained: may differ between the starts of one run.
WHERE_KEYS = {"train.output_dir", "train.resume", "train.auto_resume"}
