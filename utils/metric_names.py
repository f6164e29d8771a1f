"""The names of the retrieval figures and of the one that selects a run's best epoch, declared
once; torch-free, so that importing them (``utils.io``, hence ``datasets.synthetic``) does
not import torch (nor ``python -m utils.report``, with ``utils.run_layout``)."""

METRICS = ("R1", "R5", "R10", "mAP", "mINP")  # the figures of one retrieval task, in table order
# What selects a run's best epoch (best.pth, progress.json's "best"): text-to-image R1.
SELECTION_TASK, SELECTION_METRIC = "t2i", "R1"
