"""``python -m datasets.check``, the documented command, and nothing else: the code lives in
:mod:`dataset_tools.check` (dataset tooling, which training and evaluation never import)."""

from dataset_tools.check import main

if __name__ == "__main__":
    raise SystemExit(main())
