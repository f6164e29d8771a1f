"""``python -m datasets.write_shards``, the documented command, and nothing else: the code lives in
:mod:`dataset_tools.write_shards` (dataset tooling, which training and evaluation never import)."""

from dataset_tools.write_shards import main

if __name__ == "__main__":
    raise SystemExit(main())
