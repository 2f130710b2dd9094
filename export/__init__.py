"""ONNX export of keras_effattn classifiers (TensorFlow side): conversion (`export.to_onnx`),
verification, fusion, quantisation, benchmarks and the static web page.

What a deployment machine runs lives in the separately installable, TensorFlow-free
``keras_effattn_runtime`` (``export/runtime/``: predictor, tokenizer, text cleaning, metadata);
``python -m export.predict`` is its command in a checkout. This package stays empty so that
importing one tool never pulls in the others.
"""
