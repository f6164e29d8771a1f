"""``python -m datasets.make_annotations``, the documented command, and nothing else: the code lives in
:mod:`dataset_tools.make_annotations` (dataset tooling, which training and evaluation never import)."""

from dataset_tools.make_annotations import main

if __name__ == "__main__":
    raise SystemExit(main())
