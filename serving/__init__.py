"""Using a trained model, apart from training: loading a run folder or weights for inference
(``inference``), the cached gallery of ``search.py`` (``gallery``), the figures of ranked
images and EFA maps (``figures``, ``efa_maps``), the search page (``page_search``, ``page_ui``)
and the ONNX encoders (``onnx_export``, ``onnx_model``, ``onnx_tokenizer``). The public
commands (test.py, search.py, search_page.py, export_onnx.py, export_features.py,
visualize.py) are built on it."""
