"""``python -m datasets.corpora``, the documented command, and nothing else: the code lives in
:mod:`dataset_tools.corpora` (dataset tooling, which training and evaluation never import)."""

from dataset_tools.corpora import main

if __name__ == "__main__":
    raise SystemExit(main())
