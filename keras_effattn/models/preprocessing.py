"""A text classifier preprocessor that cleans raw text inside the model.

`CleaningTextClassifierPreprocessor` is KerasHub's `DistilBertTextClassifierPreprocessor` (WordPiece,
``[CLS] a [SEP] (b [SEP])``, padding to ``sequence_length``) with one step in front: each raw text
is normalised by the cleaning its ``text_cleaning`` names, before tokenizing. The name is saved in
the model's config, so the same normalisation runs wherever the model sees text: in training
(`keras_effattn.training.fit` maps the preprocessor over the raw strings), in `model.predict` on
raw strings in a notebook, in `export.to_onnx` (which reads the name from the model and records
it in the ONNX metadata) and in the TensorFlow-free predictor (which applies it before its own
tokenizer).

Cleanings (`keras_effattn_runtime.metadata.TEXT_CLEANINGS`, the names the export records):

* ``"keras_effattn.clean_text"`` (default): `keras_effattn.data.clean_text` (HTML removed,
  Unicode, punctuation runs and whitespace normalised; idempotent, so text a loader already
  cleaned is unchanged).
* ``"none"``: the text as given.

Inside a `tf.data` pipeline (graph mode) the Python cleaning runs through `tf.numpy_function`; on
Python strings and NumPy arrays it runs directly. The cleaning is the same function either way.

Example:

>>> import keras_hub
>>> from keras_effattn.models.backbones import tokenizer_for
>>> pre = CleaningTextClassifierPreprocessor(tokenizer_for("minilm-l6"), sequence_length=8)
>>> pre.clean(["A <b>fine</b> film!!!"])
['A fine film!']
"""

import keras
import keras_hub
import numpy as np

from keras_effattn_runtime.cleaning import clean_text
from keras_effattn_runtime.metadata import CLEAN_TEXT, TEXT_CLEANINGS

NO_CLEANING = "none"


def check_text_cleaning(text_cleaning):
    """Returns `text_cleaning` when it names a known cleaning.

    Raises:
        ValueError: naming the value and the choices.
    """
    if text_cleaning not in TEXT_CLEANINGS:
        raise ValueError(
            f"text_cleaning must be one of {TEXT_CLEANINGS}, got {text_cleaning!r}: "
            f"'{CLEAN_TEXT}' normalises raw text (HTML, Unicode, punctuation runs) inside the "
            f"model, '{NO_CLEANING}' feeds the text as given."
        )
    return text_cleaning


def _clean_array(values):
    """`clean_text` over a NumPy array of bytes or str (any shape); returns UTF-8 bytes."""
    flat = [clean_text(v.decode("utf-8") if isinstance(v, bytes) else str(v))
            for v in np.asarray(values, dtype=object).reshape(-1)]
    return np.asarray([t.encode("utf-8") for t in flat], dtype=object).reshape(np.shape(values))


@keras.saving.register_keras_serializable(package="keras_effattn")
class CleaningTextClassifierPreprocessor(keras_hub.models.DistilBertTextClassifierPreprocessor):
    """KerasHub's DistilBERT text classifier preprocessor, cleaning each raw text first.

    Args:
        tokenizer: a KerasHub WordPiece tokenizer.
        sequence_length: int, default 512. Padded/truncated token length.
        truncate: str, default ``"round_robin"``. How text pairs are truncated.
        text_cleaning: str, default ``"keras_effattn.clean_text"``; ``"none"`` turns it off.
        **kwargs: passed to the KerasHub preprocessor.

    Call arguments are the KerasHub preprocessor's: ``x`` a batch of strings or a tuple
    ``(texts_a, texts_b)`` of pairs, optional ``y`` and ``sample_weight``.
    """

    def __init__(self, tokenizer, sequence_length=512, truncate="round_robin",
                 text_cleaning=CLEAN_TEXT, **kwargs):
        super().__init__(tokenizer=tokenizer, sequence_length=sequence_length,
                         truncate=truncate, **kwargs)
        self.text_cleaning = check_text_cleaning(text_cleaning)

    def clean(self, texts):
        """One segment of raw texts cleaned as ``text_cleaning`` says, in the form given: a str,
        a list of str, a NumPy array or a string `tf.Tensor`."""
        if self.text_cleaning == NO_CLEANING:
            return texts
        if isinstance(texts, str):
            return clean_text(texts)
        if isinstance(texts, list):
            return [self.clean(t) for t in texts]
        if isinstance(texts, np.ndarray):
            return _clean_array(texts)
        import tensorflow as tf

        if tf.is_tensor(texts):
            if texts.dtype != tf.string:
                return texts  # token ids or other non-text input: nothing to clean
            cleaned = tf.numpy_function(_clean_array, [texts], tf.string, stateful=False)
            cleaned.set_shape(texts.shape)
            return cleaned
        return texts

    def call(self, x, y=None, sample_weight=None):
        x = tuple(self.clean(s) for s in x) if isinstance(x, tuple) else self.clean(x)
        return super().call(x, y, sample_weight)

    def get_config(self):
        return {**super().get_config(), "text_cleaning": self.text_cleaning}
