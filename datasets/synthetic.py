"""``python -m datasets.synthetic``, the documented command, and nothing else: the code lives in
:mod:`dataset_tools.synthetic` (dataset tooling, which training and evaluation never import)."""

from dataset_tools.synthetic import main

if __name__ == "__main__":
    raise SystemExit(main())
