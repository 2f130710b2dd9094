"""keras_effattn_runtime: run an exported keras_effattn classifier with NumPy and onnxruntime only.

A classroom machine installs this package alone (``pip install keras-effattn-runtime``, or from a
checkout ``pip install export/runtime``): no TensorFlow, no keras_effattn, no repository. It holds
what deployment and training must share, so there is one copy of each:

* `keras_effattn_runtime.cleaning`: the text cleaning (`clean_text`); keras_effattn's model
  preprocessor and data loaders import it from here.
* `keras_effattn_runtime.tokenizer`: a KerasHub-identical WordPiece tokenizer.
* `keras_effattn_runtime.metadata`: the ONNX metadata an export carries, and its reader.
* `keras_effattn_runtime.predict`: the predictor (`Predictor`) and its command
  ``effattn-predict`` (``python -m keras_effattn_runtime.predict``).
* `keras_effattn_runtime.cli`: the command-line contract every project script follows.

Example:
    ```python
    from keras_effattn_runtime import Predictor

    Predictor("exported/minilm").predict(["A wonderful, moving film."])
    ```
"""

__version__ = "0.1.0"


def __getattr__(name):
    # `Predictor` imports onnxruntime; load it on first use so `cleaning` and `cli` stay light.
    if name == "Predictor":
        from keras_effattn_runtime.predict import Predictor

        return Predictor
    raise AttributeError(f"module 'keras_effattn_runtime' has no attribute {name!r}")
