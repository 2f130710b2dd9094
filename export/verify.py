"""Parity of an exported classifier with its Keras original, measured with onnxruntime.

`verify_export` checks, on real texts:

1. **tokenisation**: the TensorFlow-free tokenizer gives exactly KerasHub's ids and masks;
2. **shape sweep** (fp32, strict): batch sizes 1, 3 and 8 at several packed lengths (short,
   medium, the model's maximum), same ids to Keras and onnxruntime; every batch's maximum
   absolute logit difference must stay within ``max_abs_diff``;
3. **slice**: all texts at the model's length: label agreement of fp32 (and of the int8/fp16
   model, which must reach ``min_agreement``) with Keras, with the number of flipped labels and
   a Wilson 95 % interval, and accuracy against gold labels when given (the quantisation
   accuracy change with its paired 95 % interval). A slice too small to resolve
   ``min_agreement`` (fewer than 3 flips allowed) gets a warning in the report: 128 texts at
   0.99 let one unlucky review decide the gate, 1,000 (the command's default) do not;
4. **padding invariance**: padding each batch to its longest text instead of the maximum length
   must not change fp32 logits beyond ``max_abs_diff`` (on the first ``PADDING_CHECK_TEXTS``
   texts, one per batch); the predictor pads to the longest text only when this holds;
5. **batch invariance** (int8/fp16): the quantised model's slice comparison runs one text per
   call, as the web page runs it; the first ``PADDING_CHECK_TEXTS`` texts are rerun in batches
   of 8, and the predictor batches texts only when that changes no logit beyond
   ``max_abs_diff``. onnxruntime's dynamic int8 picks each activation scale from the whole
   batch, so there a text's label could otherwise depend on which texts share its batch.

The Keras side is the training pipeline itself: KerasHub's preprocessor (tensorflow-text) and the
Keras model. Nothing here is printed; the result is a JSON-ready dict with ``ok`` and
``failures``.

Example:
```python
result = verify_export(model, model.preprocessor, tokenizer, "model.onnx", None, reviews)
assert result["ok"], result["failures"]
```
"""

import numpy as np

SWEEP_BATCH_SIZES = (1, 3, 8)
KERAS_BATCH_SIZE = 16
# Padding invariance is a property of the graph, not of the text: this many texts settle it,
# and the one-text-per-batch run of the whole slice would cost as much as the slice itself.
PADDING_CHECK_TEXTS = 256
# The fp32 tolerance on logits, also what counts as "the same logits" (batch, padding).
DEFAULT_MAX_ABS_DIFF = 1e-4
Z_95 = 1.959963984540054


def onnx_session(path, threads=None):
    """An onnxruntime CPU session as the predictor makes it (`keras_effattn_runtime.predict.session_options`)."""
    import onnxruntime as ort

    from keras_effattn_runtime.predict import session_options

    return ort.InferenceSession(
        str(path), session_options(threads), providers=["CPUExecutionProvider"]
    )


def run_session(session, batch, batch_size=KERAS_BATCH_SIZE):
    """Logits [N, C] (float32) from an onnxruntime session on id inputs, in chunks."""
    names = [i.name for i in session.get_inputs()]
    feeds_all = _feeds(names, batch)
    count = len(batch["token_ids"])
    outputs = []
    for start in range(0, count, batch_size):
        feeds = {k: v[start : start + batch_size] for k, v in feeds_all.items()}
        outputs.append(session.run(["logits"], feeds)[0])
    return np.concatenate(outputs).astype(np.float32)


def run_texts(session, tokenizer, texts, padding="max_length", batch_size=8):
    """Logits of texts tokenized per batch (``padding="longest"`` pads each batch to its own
    longest text, as the predictor does)."""
    outputs = []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(texts[start : start + batch_size], padding=padding)
        outputs.append(run_session(session, batch, batch_size=batch_size))
    return np.concatenate(outputs)


def batch_invariance(session, tokenizer, texts, padding="longest", check_texts=None,
                     max_abs_diff=DEFAULT_MAX_ABS_DIFF):
    """Logits of `texts` one text per call, and whether batching changes them.

    The first `check_texts` texts (all when None) are rerun in batches of 8. Returns
    ``(logits, comparison, invariant)``: the one-per-call logits [N, C], `compare`'s dict of
    the batched rerun against them, and whether no logit moved beyond `max_abs_diff`.
    onnxruntime's dynamic int8 picks each activation scale from the whole batch, so a text's
    int8 logits can depend on the texts beside it; the predictor batches only graphs whose
    logits do not.
    """
    alone = run_texts(session, tokenizer, texts, padding=padding, batch_size=1)
    subset = texts if check_texts is None else texts[:check_texts]
    batched = run_texts(session, tokenizer, subset, padding=padding)
    comparison = compare(alone[: len(subset)], batched)
    return alone, comparison, bool(comparison["max_abs_diff"] <= max_abs_diff)


def _feeds(names, batch):
    feeds = {}
    for name in names:
        if name == "segment_ids" and name not in batch:
            feeds[name] = np.zeros_like(batch["token_ids"])
        else:
            feeds[name] = np.asarray(batch[name])
    return feeds


def run_keras(model, batch, batch_size=KERAS_BATCH_SIZE, output=None):
    """Logits [N, C] (float32) from the Keras model on id inputs, in chunks (`output`: the
    entry to take from a model with a dict of outputs)."""
    names = list(model.input)
    count = len(batch["token_ids"])
    outputs = []
    for start in range(0, count, batch_size):
        feeds = _feeds(names, {k: v[start : start + batch_size] for k, v in batch.items()})
        feeds = {
            name: value.astype(str(model.input[name].dtype)) for name, value in feeds.items()
        }
        result = model(feeds, training=False)
        outputs.append(np.asarray(result[output] if output else result))
    return np.concatenate(outputs).astype(np.float32)


def attention_parity(attention_model, tokenizer, fp32, final, texts):
    """Largest difference of the ``attention`` output between Keras and the ONNX model(s)."""
    batch = tokenizer(texts)
    reference = run_keras(attention_model, batch, output="attention")
    names = [i.name for i in fp32.get_inputs()]
    feeds = _feeds(names, batch)
    result = {"n": len(texts)}
    for name, session in (("fp32", fp32), ("final", final)):
        values = session.run(["attention"], feeds)[0]
        result[f"{name}_max_abs_diff"] = float(np.max(np.abs(values - reference)))
    return result


def wilson_interval(successes, n, z=Z_95):
    """Wilson score interval ``[low, high]`` of a proportion (95 % by default).

    Unlike the normal approximation it stays inside [0, 1] and is honest near 1, where label
    agreement lives: 1,000 agreements of 1,000 give [0.9962, 1.0], 128 of 128 only [0.971, 1.0].
    """
    if n <= 0:
        return [0.0, 1.0]
    p = successes / n
    denominator = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return [float(max(0.0, centre - half)), float(min(1.0, centre + half))]


def compare(reference, candidate):
    """Maximum absolute difference and argmax agreement of two logit arrays [N, C].

    Returns ``n``, ``max_abs_diff``, ``label_agreement``, ``flips`` (labels that differ) and
    ``agreement_ci95`` (Wilson 95 % interval of the agreement over these texts).
    """
    reference = np.asarray(reference, np.float64)
    candidate = np.asarray(candidate, np.float64)
    if reference.shape != candidate.shape:
        raise ValueError(f"logit shapes differ: {reference.shape} vs {candidate.shape}.")
    n = len(reference)
    agree = int(np.sum(reference.argmax(-1) == candidate.argmax(-1))) if n else 0
    return {
        "n": n,
        "max_abs_diff": float(np.max(np.abs(reference - candidate))) if reference.size else 0.0,
        "label_agreement": agree / n if n else 1.0,
        "flips": n - agree,
        "agreement_ci95": wilson_interval(agree, n),
    }


def accuracy(logits, labels):
    return float(np.mean(np.asarray(logits).argmax(-1) == np.asarray(labels)))


def accuracy_change(reference_logits, candidate_logits, labels, z=Z_95):
    """Paired accuracy change of `candidate` over `reference` on the same texts.

    Only the texts where exactly one of the two is right move the difference: ``gained``
    (candidate right, reference wrong) and ``lost``. The 95 % interval is the paired (McNemar)
    normal interval of ``(gained - lost) / n``.
    """
    labels = np.asarray(labels)
    n = len(labels)
    right_ref = np.asarray(reference_logits).argmax(-1) == labels
    right_new = np.asarray(candidate_logits).argmax(-1) == labels
    gained = int(np.sum(right_new & ~right_ref))
    lost = int(np.sum(right_ref & ~right_new))
    delta = (gained - lost) / n if n else 0.0
    se = np.sqrt(max(gained + lost - n * delta * delta, 0.0)) / n if n else 0.0
    return {
        "delta": float(delta),
        "delta_ci95": [float(delta - z * se), float(delta + z * se)],
        "gained": gained,
        "lost": lost,
    }


def resolution_warning(n, min_agreement):
    """A note when `n` texts are too few to tell `min_agreement` from perfect agreement.

    The gate allows ``floor(n * (1 - min_agreement))`` flips; under 3, one unlucky text decides
    it (the 128-text slice at 0.99 allowed one), so the report says so.
    """
    allowed = int(np.floor(n * (1.0 - min_agreement) + 1e-9))
    if min_agreement < 1.0 and allowed < 3:
        needed = int(np.ceil(3 / (1.0 - min_agreement)))
        return (
            f"{n} texts allow only {allowed} flipped label(s) at min_agreement "
            f"{min_agreement}: too few to resolve it; use at least {needed} texts."
        )
    return None


def sweep_lengths(max_length):
    """Packed lengths for the shape sweep: short, medium and the model's maximum."""
    return sorted({min(16, max_length), min(max(max_length // 2, 3), max_length), max_length})


def tokenizer_parity(preprocessor, tokenizer, texts):
    """Counts texts whose TensorFlow-free ids or mask differ from KerasHub's preprocessor."""
    reference = preprocessor(list(texts))
    mine = tokenizer(list(texts))
    ids = np.asarray(reference["token_ids"])
    mask = np.asarray(reference["padding_mask"]).astype(np.int32)
    differs = (ids != mine["token_ids"]).any(-1) | (mask != mine["padding_mask"]).any(-1)
    bad = np.flatnonzero(differs)
    return {"n": len(texts), "mismatches": len(bad), "first_mismatch": _first(bad)}


def _first(indices):
    return int(indices[0]) if len(indices) else None


def verify_export(
    model,
    preprocessor,
    tokenizer,
    fp32_path,
    final_path,
    texts,
    labels=None,
    max_abs_diff=DEFAULT_MAX_ABS_DIFF,
    min_agreement=0.99,
    attention_model=None,
):
    """Verifies an export (see the module docstring).

    Args:
        model: the Keras classifier (float32).
        preprocessor: its KerasHub preprocessor (the tokenisation reference).
        tokenizer: the `keras_effattn_runtime.tokenizer.WordPieceTokenizer` shipped with the model.
        fp32_path: path of the float32 ONNX model.
        final_path: path of the quantised (int8/fp16) model, or None when fp32 is final.
        texts: list of str (real texts).
        labels: optional gold labels for accuracy.
        max_abs_diff: fp32 tolerance on logits.
        min_agreement: minimum label agreement with Keras for the quantised model.
        attention_model: the Keras model behind an export with an ``attention`` output
            (`keras_effattn.models.attention_maps.attention_output_model`); its attention on
            the first 16 texts must match fp32 within `max_abs_diff` (the quantised model's
            difference is reported).

    Returns:
        A dict: ``ok``, ``failures`` (list of str), ``tokenizer``, ``sweep`` (one entry per
        batch size and length), ``fp32`` and ``final`` (slice comparisons), ``accuracy`` (when
        labels are given), ``padding_invariant`` and ``batch_invariant`` (whether the final
        model's logits for a text are the same alone as in a batch; ``batch`` holds that
        comparison). The final model's slice comparison runs one text per call.
    """
    from keras_effattn_runtime.tokenizer import WordPieceTokenizer

    failures = []
    result = {"tokenizer": tokenizer_parity(preprocessor, tokenizer, texts)}
    if result["tokenizer"]["mismatches"]:
        failures.append(
            f"tokenizer differs from KerasHub on {result['tokenizer']['mismatches']} of "
            f"{len(texts)} texts (first: text {result['tokenizer']['first_mismatch']})"
        )

    fp32 = onnx_session(fp32_path)
    final = onnx_session(final_path) if final_path else fp32

    sweep = []
    config = tokenizer.get_config()
    for length in sweep_lengths(tokenizer.sequence_length):
        short = WordPieceTokenizer(
            tokenizer.vocabulary,
            length,
            **{k: config[k] for k in ("lowercase", "strip_accents", "split_on_cjk")},
            suffix_indicator=tokenizer.suffix_indicator,
            oov_token=tokenizer.oov_token,
            start_token=tokenizer.start_token,
            end_token=tokenizer.end_token,
            pad_token=tokenizer.pad_token,
        )
        for batch_size in SWEEP_BATCH_SIZES:
            batch = short(texts[:batch_size])
            keras_logits = run_keras(model, batch)
            entry = {"batch": batch_size, "length": length}
            entry["fp32"] = compare(keras_logits, run_session(fp32, batch))
            if final_path:
                entry["final"] = compare(keras_logits, run_session(final, batch))
            sweep.append(entry)
            if entry["fp32"]["max_abs_diff"] > max_abs_diff:
                failures.append(
                    f"fp32 max |logit diff| {entry['fp32']['max_abs_diff']:.3g} > {max_abs_diff} "
                    f"at batch {batch_size}, length {length}"
                )
    result["sweep"] = sweep
    if attention_model is not None:
        result["attention"] = attention_parity(attention_model, tokenizer, fp32, final, texts[:16])
        if result["attention"]["fp32_max_abs_diff"] > max_abs_diff:
            failures.append(
                f"fp32 attention output differs from Keras by "
                f"{result['attention']['fp32_max_abs_diff']:.3g} > {max_abs_diff}"
            )

    reference_batch = {
        k: np.asarray(v) for k, v in preprocessor(list(texts)).items() if k in model.input
    }
    keras_logits = run_keras(model, reference_batch)
    full = tokenizer(texts)
    fp32_logits = run_session(fp32, full)
    result["fp32"] = compare(keras_logits, fp32_logits)
    if result["fp32"]["max_abs_diff"] > max_abs_diff:
        failures.append(
            f"fp32 max |logit diff| {result['fp32']['max_abs_diff']:.3g} > {max_abs_diff} on "
            f"the {len(texts)}-text slice"
        )

    # One text per batch: no padding at all, the strongest form of the check.
    subset = texts[:PADDING_CHECK_TEXTS]
    padded_logits = run_texts(fp32, tokenizer, subset, padding="longest", batch_size=1)
    invariance = compare(fp32_logits[: len(subset)], padded_logits)
    result["padding"] = invariance
    result["padding_invariant"] = bool(invariance["max_abs_diff"] <= max_abs_diff)

    if final_path:
        padding = "longest" if result["padding_invariant"] else "max_length"
        # One text per call, as the page runs every text.
        final_logits, result["batch"], result["batch_invariant"] = batch_invariance(
            final, tokenizer, texts, padding, len(subset), max_abs_diff)
        result["final"] = compare(keras_logits, final_logits)
        result["final"]["padding"] = padding
        result["final"]["batch_size"] = 1
        final = result["final"]
        if final["label_agreement"] < min_agreement:
            low, high = final["agreement_ci95"]
            failures.append(
                f"label agreement {final['label_agreement']:.4f} (95% CI {low:.4f}-{high:.4f}, "
                f"{final['flips']} of {len(texts)} labels changed) < {min_agreement} on the "
                f"{len(texts)}-text slice"
            )
        warning = resolution_warning(len(texts), min_agreement)
        if warning:
            result["warnings"] = [warning]
    else:
        final_logits = fp32_logits
        result["final"] = dict(result["fp32"], padding="max_length")
        result["batch_invariant"] = True  # the sweep held batches 1, 3 and 8 to Keras
    if labels is not None:
        keras_accuracy = accuracy(keras_logits, labels)
        final_accuracy = accuracy(final_logits, labels)
        change = accuracy_change(keras_logits, final_logits, labels)
        result["accuracy"] = {
            "keras": keras_accuracy,
            "keras_ci95": wilson_interval(round(keras_accuracy * len(labels)), len(labels)),
            "onnx_fp32": accuracy(fp32_logits, labels),
            "onnx_final": final_accuracy,
            **change,
        }
    result["failures"] = failures
    result["ok"] = not failures
    return result
