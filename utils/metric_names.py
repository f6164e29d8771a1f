"""The names of the retrieval figures and of the one that selects a run's best epoch, declared
once; torch-free, so that the tools that only read results (``python -m utils.report``) start
without importing torch."""

METRICS = ("R1", "R5", "R10", "mAP", "mINP")  # the figures of one retrieval task, in table order
# What selects a run's best epoch (best.pth, progress.json's "best"): text-to-image R1.
SELECTION_TASK, SELECTION_METRIC = "t2i", "R1"
