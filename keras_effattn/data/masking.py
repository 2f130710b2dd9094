"""Whole-word masking for masked-language-model training and evaluation (NumPy).

BERT's released whole-word-masking models select *words*, not WordPiece tokens: when a word is
chosen every piece of it is predicted, so the model cannot recover ``##ing`` from ``walk``
beside it. KerasHub's `MaskedLMMaskGenerator` selects tokens independently. `WholeWordMasker`
works on already-packed token ids (``[CLS] ... [SEP] [PAD]...``) and follows the recipe of
BERT's ``create_pretraining_data.py``:

1. the selectable tokens of a row are every non-special token; a word is a token that does not
   start with the continuation prefix (``##``) plus the continuation pieces that follow it;
2. the row predicts ``min(max_predictions, max(1, round(rate * selectable)))`` tokens: words are
   taken in a random order and a word is skipped when it would overshoot that count;
3. each selected token is replaced by ``[MASK]`` with probability `mask_token_rate`, by a random
   non-special token with `random_token_rate`, and kept otherwise.

Draws come from a `numpy.random.Generator`, so a seed fixes the masks regardless of any
TensorFlow op history; the output has the layout KerasHub's masked-LM models take
(``token_ids``, ``mask_positions``, ``mask_ids``, ``mask_weights``).

References:
    Devlin et al., "BERT: Pre-training of Deep Bidirectional Transformers for Language
    Understanding" (2019), and the whole-word-masking note of its repository.
"""

import numpy as np


class WholeWordMasker:
    """Selects and corrupts whole WordPiece words in packed token-id rows.

    Args:
        vocabulary: list of str, the tokenizer's vocabulary (index = token id).
        mask_token_id: int, id of ``[MASK]``.
        special_token_ids: ids never selected nor drawn as random replacements
            (``[CLS]``, ``[SEP]``, ``[PAD]``, ``[MASK]``, ...).
        rate: float in (0, 1), default 0.15. Share of a row's selectable tokens predicted.
        max_predictions: int >= 1. Most tokens predicted per row (the width of
            ``mask_positions``).
        mask_token_rate: float, default 0.8. Chance a selected token becomes ``[MASK]``.
        random_token_rate: float, default 0.1. Chance it becomes a random token; the rest keep
            their token.
        continuation_prefix: str, default ``"##"``. Marks a piece that continues a word.

    Example:
    ```python
    vocab = ["[PAD]", "[CLS]", "[SEP]", "[MASK]", "walk", "##ing", "the", "dog"]
    masker = WholeWordMasker(vocab, mask_token_id=3, special_token_ids=[0, 1, 2, 3],
                             rate=0.5, max_predictions=4)
    out = masker(np.array([[1, 6, 7, 4, 5, 2, 0]]), np.random.default_rng(0))
    out["mask_positions"], out["mask_weights"]  # whole words: "walk ##ing" is both or neither
    ```
    """

    def __init__(
        self,
        vocabulary,
        mask_token_id,
        special_token_ids,
        rate=0.15,
        max_predictions=20,
        mask_token_rate=0.8,
        random_token_rate=0.1,
        continuation_prefix="##",
    ):
        if not isinstance(rate, float) or not 0.0 < rate < 1.0:
            raise ValueError(f"rate must be a float in (0, 1), got {rate!r}.")
        if not isinstance(max_predictions, int) or max_predictions < 1:
            raise ValueError(f"max_predictions must be an int >= 1, got {max_predictions!r}.")
        if min(mask_token_rate, random_token_rate) < 0 or mask_token_rate + random_token_rate > 1:
            raise ValueError(
                "mask_token_rate and random_token_rate must be >= 0 with a sum <= 1, got "
                f"{mask_token_rate!r} and {random_token_rate!r}."
            )
        size = len(vocabulary)
        special = np.zeros(size, bool)
        special_ids = [int(i) for i in special_token_ids]
        if not 0 <= int(mask_token_id) < size or any(not 0 <= i < size for i in special_ids):
            raise ValueError(
                f"mask_token_id and special_token_ids must be ids of the {size}-token vocabulary."
            )
        special[special_ids] = True
        self.vocabulary_size = size
        self.mask_token_id = int(mask_token_id)
        self.special = special
        self.continuation = np.array([str(t).startswith(continuation_prefix) for t in vocabulary])
        self.replacements = np.flatnonzero(~special)
        self.rate = rate
        self.max_predictions = max_predictions
        self.mask_token_rate = float(mask_token_rate)
        self.random_token_rate = float(random_token_rate)

    @classmethod
    def from_tokenizer(cls, tokenizer, **kwargs):
        """A masker for a KerasHub WordPiece tokenizer (its vocabulary, ``[MASK]`` and special
        tokens); `kwargs` go to the constructor."""
        if getattr(tokenizer, "mask_token_id", None) is None:
            raise ValueError(
                f"{type(tokenizer).__name__} has no mask token; whole-word masking needs a "
                "masked-LM tokenizer (e.g. the one of build_masked_lm's preprocessor)."
            )
        return cls(tokenizer.get_vocabulary(), tokenizer.mask_token_id,
                   tokenizer.special_token_ids, **kwargs)

    def words(self, row):
        """The words of one row of token ids: a list of position arrays, in order."""
        row = np.asarray(row)
        selectable = ~self.special[row]
        starts = selectable & ~self.continuation[row]
        # A continuation piece with no word before it (cut by packing) starts its own word.
        previous = np.concatenate([[False], selectable[:-1]])
        starts |= selectable & ~previous
        positions = np.flatnonzero(selectable)
        if positions.size == 0:
            return []
        bounds = np.flatnonzero(starts[positions])
        return np.split(positions, bounds[1:])

    def __call__(self, token_ids, rng):
        """Masks each row of `token_ids` (int array [B, T], packed and padded).

        Args:
            token_ids: int array [B, T].
            rng: a `numpy.random.Generator`.

        Returns:
            A dict of arrays: ``token_ids`` [B, T] (corrupted copy), ``mask_positions`` [B, P],
            ``mask_ids`` [B, P] (the original tokens there) and ``mask_weights`` [B, P] float32
            (1 for a prediction, 0 for padding), with ``P = max_predictions``.
        """
        token_ids = np.asarray(token_ids)
        if token_ids.ndim != 2:
            raise ValueError(f"token_ids must be [batch, length], got shape {token_ids.shape}.")
        if token_ids.size and (token_ids.min() < 0 or token_ids.max() >= self.vocabulary_size):
            raise ValueError(
                f"token_ids hold ids outside the {self.vocabulary_size}-token vocabulary; mask "
                "the ids of the tokenizer this masker was made from."
            )
        batch, width = token_ids.shape[0], self.max_predictions
        corrupted = token_ids.copy()
        positions = np.zeros((batch, width), token_ids.dtype)
        ids = np.zeros((batch, width), token_ids.dtype)
        weights = np.zeros((batch, width), np.float32)
        for b in range(batch):
            chosen = self._select(token_ids[b], rng)
            n = chosen.size
            positions[b, :n] = chosen
            ids[b, :n] = token_ids[b, chosen]
            weights[b, :n] = 1.0
            draw = rng.random(n)
            to_mask = draw < self.mask_token_rate
            to_random = ~to_mask & (draw < self.mask_token_rate + self.random_token_rate)
            corrupted[b, chosen[to_mask]] = self.mask_token_id
            corrupted[b, chosen[to_random]] = rng.choice(self.replacements, to_random.sum())
        return {"token_ids": corrupted, "mask_positions": positions, "mask_ids": ids,
                "mask_weights": weights}

    def _select(self, row, rng):
        words = self.words(row)
        selectable = sum(w.size for w in words)
        if selectable == 0:
            return np.zeros(0, int)
        budget = min(self.max_predictions, max(1, round(selectable * self.rate)))
        chosen, count = [], 0
        for i in rng.permutation(len(words)):
            if count + words[i].size > budget:
                continue
            chosen.append(words[i])
            count += words[i].size
            if count == budget:
                break
        return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, int)
