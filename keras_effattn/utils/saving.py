"""Loading a saved ``.keras`` model for inference.

A training run saves its model with the optimizer state (so training could go on). Inference
needs neither that state nor a compiled model: `load_for_inference` loads without compiling.
A KerasHub task (such as `build_classifier`'s model) compiles itself with a default optimizer
when it is rebuilt, and Keras then warns that it skipped the saved optimizer's variables; that
warning says nothing about the weights and is not shown.

Example:
    ```python
    model = load_for_inference("runs/train/my_run/model.keras")
    ```
"""

import os
import warnings

SKIPPED_OPTIMIZER_WARNING = "Skipping variable loading for optimizer"


def load_for_inference(path):
    """Loads the ``.keras`` file `path` uncompiled, without the optimizer-state warning.

    Args:
        path: str or path of a ``.keras`` file (keras_effattn layers are registered first).

    Returns:
        The Keras model, weights as saved.

    Raises:
        FileNotFoundError: `path` is not a file.
    """
    import keras

    import keras_effattn  # noqa: F401 - registers the attention layers for deserialisation

    if not os.path.isfile(path):
        raise FileNotFoundError(f"No saved model at {os.fspath(path)!r}; pass a .keras file.")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=SKIPPED_OPTIMIZER_WARNING)
        return keras.saving.load_model(path, compile=False)
