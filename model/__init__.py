"""The network and its losses. ``objectives`` (the losses as pure functions), ``loss`` (the
criterion: which loss is fed what, weights, the global batch), ``fmfa`` (encoders and heads),
``clip`` (the open_clip backbone), ``max_similarity`` (EFA's blockwise max), ``shard`` (a batch
split over processes), ``build`` (``build_model``, ``build_criterion``,
``model_from_checkpoint``). Reading weight files: ``clip_weights``, ``weights_file``,
``open_clip_config``."""
