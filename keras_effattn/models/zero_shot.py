"""Zero-shot swap quality: how close a swapped backbone's embeddings stay to the exact one.

Before any fine-tuning, a pretrained encoder whose softmax attention is replaced by FAVOR+ or
Linformer computes different hidden states. `embedding_similarity` measures the gap on given
token ids with the cosine similarity of the [CLS] vectors and of the masked-mean-pooled
vectors (all-MiniLM-L6-v2's sentence embedding), per example, and the relative error of the
sequence output over real tokens.
"""

import numpy as np


def encode(backbone, token_ids, padding_mask, batch_size=16):
    """Runs a backbone in batches; returns its [CLS] and masked-mean embeddings and outputs.

    Args:
        backbone: a KerasHub backbone taking ``token_ids`` and ``padding_mask``.
        token_ids: int array [B, T].
        padding_mask: array [B, T], 1 for real tokens.
        batch_size: int, examples per forward pass.

    Returns:
        A dict of float64 arrays: ``cls`` [B, D], ``mean`` [B, D] and ``sequence`` [B, T, D].
    """
    token_ids = np.asarray(token_ids, "int32")
    padding_mask = np.asarray(padding_mask, "int32")
    if token_ids.shape != padding_mask.shape or token_ids.ndim != 2:
        raise ValueError(
            f"token_ids {token_ids.shape} and padding_mask {padding_mask.shape} must both be "
            "[B, T]."
        )
    if not isinstance(batch_size, int) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}.")
    outputs = []
    for start in range(0, len(token_ids), batch_size):
        batch = {
            "token_ids": token_ids[start : start + batch_size],
            "padding_mask": padding_mask[start : start + batch_size],
        }
        outputs.append(np.asarray(backbone(batch, training=False), "float64"))
    sequence = np.concatenate(outputs)
    mask = padding_mask[..., None].astype("float64")
    mean = (sequence * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1.0)
    return {"cls": sequence[:, 0], "mean": mean, "sequence": sequence * mask}


def _cosine(a, b):
    norms = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    return (a * b).sum(axis=-1) / np.maximum(norms, 1e-12)


def embedding_similarity(reference, candidate):
    """Compares two `encode` results of the same inputs.

    Args:
        reference: `encode` output of the exact backbone.
        candidate: `encode` output of the swapped backbone.

    Returns:
        A dict of floats: ``cls_cosine_mean/min``, ``mean_cosine_mean/min`` (per-example
        cosines of the [CLS] and mean-pooled vectors) and ``sequence_rel_error`` (Frobenius
        norm of the difference over real tokens divided by the reference's).

    Example:
    ```python
    ref = encode(exact_backbone, ids, mask)
    embedding_similarity(ref, encode(favor_backbone, ids, mask))["mean_cosine_mean"]
    ```
    """
    cls = _cosine(reference["cls"], candidate["cls"])
    mean = _cosine(reference["mean"], candidate["mean"])
    error = np.linalg.norm(candidate["sequence"] - reference["sequence"])
    return {
        "cls_cosine_mean": float(cls.mean()),
        "cls_cosine_min": float(cls.min()),
        "mean_cosine_mean": float(mean.mean()),
        "mean_cosine_min": float(mean.min()),
        "sequence_rel_error": float(error / max(np.linalg.norm(reference["sequence"]), 1e-12)),
    }
