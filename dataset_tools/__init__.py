"""Dataset tooling, apart from the method: what draws, imports or checks a dataset. ``check``
(+ ``caption_checks``: records, images, noisy captions), ``make_annotations`` (a CSV to
``annotations.json``), ``corpora`` (the public pretraining corpora), ``write_shards`` (tar
shards for streaming), ``synthetic`` (+ ``synthetic_draw``: Synthetic-PEDES).

Run as ``python -m datasets.<tool>`` (the documented commands, kept by an entry module each in
``datasets/``). Built on ``datasets`` (its readers and the shards' format); ``datasets``, the
model and training never import it."""
