"""Tiny models and data for the training-engine tests (shared by tests/test_training_*.py)."""

import keras
import keras_hub
import numpy as np

WORDS = ["good", "great", "fine", "bad", "awful", "poor", "the", "film", "was", "plot", "a", "it"]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS


def tiny_classifier(num_classes=2, sequence_length=12, dropout=0.0, num_layers=2):
    """A tiny DistilBERT text classifier on raw strings (vocabulary of 17 tokens)."""
    tokenizer = keras_hub.models.DistilBertTokenizer(vocabulary=VOCAB, lowercase=True)
    preprocessor = keras_hub.models.DistilBertTextClassifierPreprocessor(
        tokenizer, sequence_length=sequence_length
    )
    backbone = keras_hub.models.DistilBertBackbone(
        vocabulary_size=len(VOCAB),
        num_layers=num_layers,
        num_heads=2,
        hidden_dim=16,
        intermediate_dim=32,
        max_sequence_length=sequence_length,
        dropout=dropout,
    )
    return keras_hub.models.DistilBertTextClassifier(
        backbone, num_classes=num_classes, preprocessor=preprocessor, activation=None,
        dropout=dropout,
    )


def tiny_regressor(sequence_length=16, dropout=0.0):
    """A tiny `EffAttnTextClassifier` with one linear output (num_classes=1), on raw strings."""
    from keras_effattn.models.classifier import EffAttnTextClassifier

    tokenizer = keras_hub.models.DistilBertTokenizer(vocabulary=VOCAB, lowercase=True)
    preprocessor = keras_hub.models.DistilBertTextClassifierPreprocessor(
        tokenizer, sequence_length=sequence_length
    )
    backbone = keras_hub.models.DistilBertBackbone(
        vocabulary_size=len(VOCAB), num_layers=1, num_heads=2, hidden_dim=16,
        intermediate_dim=32, max_sequence_length=sequence_length, dropout=dropout,
    )
    return EffAttnTextClassifier(backbone, num_classes=1, preprocessor=preprocessor,
                                 dropout=dropout)


def sentiment_texts(n, seed=0):
    """Synthetic reviews whose label is decided by the polar word they contain."""
    rng = np.random.RandomState(seed)
    texts, labels = [], []
    for _ in range(n):
        label = int(rng.randint(2))
        polar = rng.choice(WORDS[:3] if label else WORDS[3:6])
        filler = list(rng.choice(WORDS[6:], size=4))
        filler.insert(int(rng.randint(5)), polar)
        texts.append(" ".join(filler))
        labels.append(label)
    return texts, np.array(labels, dtype=np.int32)


class TinyData:
    """Duck-typed TextDataset: texts, labels, class names."""

    def __init__(self, n, seed=0):
        self.texts, self.labels = sentiment_texts(n, seed)
        self.class_names = ("neg", "pos")
        self.text_pairs = None


class CrashAfter(keras.callbacks.Callback):
    """Simulates a killed run: raises after `steps` training steps of this fit call."""

    def __init__(self, steps):
        super().__init__()
        self.steps = steps
        self.seen = 0

    def on_train_batch_end(self, batch, logs=None):
        self.seen += 1
        if self.seen >= self.steps:
            raise KeyboardInterrupt(f"simulated crash after {self.seen} steps")


def pair_data(n, seed=0, regression=False):
    """A duck-typed text-pair dataset whose label is decided by the SECOND segment's polar word:
    a class id, or (regression) a score in [0, 5] (4.5 positive, 0.5 negative, plus noise)."""
    from keras_effattn.data import TextDataset

    first, _ = sentiment_texts(n, seed + 1000)
    second, labels = sentiment_texts(n, seed)
    if regression:
        noise = np.random.RandomState(seed).uniform(-0.4, 0.4, n)
        scores = (0.5 + 4.0 * labels + noise).astype(np.float32)
        return TextDataset(first, scores, text_pairs=second, name=f"pairs-reg-{seed}")
    return TextDataset(first, labels, class_names=("neg", "pos"), text_pairs=second,
                       name=f"pairs-{seed}")
