"""TensorFlow-free deployment of keras_effattn classifiers: ONNX export, verification,
quantisation, a KerasHub-identical WordPiece tokenizer and an onnxruntime predictor.

`export.predict` and `export.tokenizer` import only numpy and onnxruntime; `export.to_onnx`,
`export.verify` and `export.benchmark` need TensorFlow. This package stays empty so that
importing the predictor never pulls in the exporter.
"""
