"""Shared helpers. ``metrics`` (``rank``: R@K, mAP, mINP) and ``metric_names``; ``distributed``
(torchrun); ``reproducibility`` (seeds, kernels); ``gpu`` (why no GPU); ``io`` (atomic writes);
``cli`` (one-line errors, the exit); ``logger``, ``memory``, ``run_info``. The report across run
folders (``python -m utils.report``): ``report``, ``run_results``, ``run_layout``, ``figures``."""
