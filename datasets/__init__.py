"""Data. What training reads (the method): ``readers`` (annotation files of each layout),
``bases`` (torch datasets, the MLM masking of a caption), ``samplers``, ``transforms``,
``tokenizer``, ``build`` (the loaders), and for sharded corpora ``shards`` + ``streaming``.

Tooling beside it, run as programs: ``check`` (+ ``caption_checks``), ``make_annotations``
(a CSV to ``annotations.json``), ``corpora`` (the public pretraining corpora), ``write_shards``,
``synthetic`` (+ ``synthetic_draw``). Their module paths are commands users type
(``python -m datasets.check``...), so they stay here."""
