"""Data. What training reads (the method): ``readers`` (annotation files of each layout),
``bases`` (torch datasets, the MLM masking of a caption), ``samplers``, ``transforms``,
``tokenizer``, ``build`` (the loaders), and for sharded corpora ``shards`` + ``streaming``.

The tooling that draws, imports or checks a dataset lives in :mod:`dataset_tools`; its commands
keep their documented names (``python -m datasets.check``, ``make_annotations``, ``synthetic``,
``corpora``, ``write_shards``) through one entry module each here, which nothing imports."""
