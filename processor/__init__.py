"""Training and evaluation. ``training`` (a run: its parts and the loop over epochs),
``epoch_loop`` (``train_one_epoch``, one optimisation step), ``evaluator`` (features, then
``utils.metrics.rank``), ``precision`` (the four precision modes), ``run_keeper`` (the run folder
over the run's life), ``checkpointing`` (what ``last.pth`` / ``best.pth`` hold), ``run_info``
(what the log records: code, versions, device, parameters; memory per epoch). Before a run:
``preflight`` (every input, one report), ``section_check`` (run.sh's sections)."""
