"""Classify texts with an exported model: onnxruntime and NumPy only, no TensorFlow.

Reads a folder written by `python -m export.to_onnx` (``model.onnx``, ``vocab.txt``,
``tokenizer.json``), checks that the model is a keras_effattn export whose vocabulary matches the
tokenizer files, cleans each text as the training data was cleaned (metadata ``text_cleaning``:
``keras_effattn.clean_text``, which removes HTML such as ``<br />``, unescapes ``&amp;`` ...,
or ``none``), tokenizes exactly as KerasHub did in training (`keras_effattn_runtime.tokenizer`),
batches,
and returns a label and its probability per text. When the export report showed the model to be
padding invariant, texts are grouped by length and each batch is padded only to its longest
text (same logits, less work); otherwise every text is padded to the model's maximum length.

This module imports numpy, onnxruntime and this package only (no TensorFlow, no keras_effattn),
so a classroom machine needs ``pip install keras-effattn-runtime`` (this package: numpy and
onnxruntime) and the exported folder; no checkout.

Examples:
    effattn-predict --model_dir exported/minilm "A wonderful, moving film."
    python -m keras_effattn_runtime.predict --model_dir exported/minilm --json --input reviews.txt
    cat reviews.txt | python -m export.predict --model_dir exported/minilm   # in a checkout
"""

import json
import os
import sys
import time

import numpy as np
import onnxruntime as ort

from keras_effattn_runtime import cleaning, cli
from keras_effattn_runtime import metadata as meta
from keras_effattn_runtime.tokenizer import WordPieceTokenizer

MODEL_FILE = "model.onnx"
# Texts per onnxruntime call for exports whose logits do not depend on the batch.
DEFAULT_BATCH_SIZE = 16


def text_cleaner(text_cleaning):
    """The function a ``text_cleaning`` metadata value names: str -> str.

    ``"none"`` gives the identity, ``"keras_effattn.clean_text"``
    `keras_effattn_runtime.cleaning.clean_text` (the function training uses: keras_effattn's
    preprocessor imports it from here). `export.to_onnx` cleans its verification texts with this
    function too.

    Raises:
        ValueError: an unknown value.
    """
    if text_cleaning == "none":
        return lambda text: text
    if text_cleaning == meta.CLEAN_TEXT:
        return cleaning.clean_text
    raise ValueError(
        f"text_cleaning must be one of {meta.TEXT_CLEANINGS}, got {text_cleaning!r}."
    )


class Predictor:
    """An exported keras_effattn classifier, ready to classify raw texts.

    Args:
        model_dir: folder with ``model.onnx``, ``vocab.txt`` and ``tokenizer.json``.
        batch_size: None (default: 16, or 1 when the export's metadata says its logits depend
            on the batch, as dynamic int8's do, so that a text gets the same label whatever
            else is classified with it, and the same as on the web page) or an int.
        threads: optional int, onnxruntime intra-op threads (default: onnxruntime's choice).
        padding: None (default: ``"longest"`` when the export verified padding invariance,
            else ``"max_length"``), ``"longest"`` or ``"max_length"``.
        clean: bool, default True. Clean texts as the model's metadata ``text_cleaning`` says
            (``keras_effattn.clean_text`` for models trained on cleaned IMDB; exports without
            the entry are not cleaned). False: the texts are already cleaned, use them as given.

    Attributes:
        labels: list of class names (logit column order).
        max_length: the packed length texts are truncated to.
        metadata: the model's keras_effattn metadata (see `keras_effattn_runtime.metadata`).
        text_cleaning: the cleaning applied before tokenizing (``"none"`` when ``clean=False``).
        last_stats: timings of the last `predict` call (texts, batches, total_ms,
            per_text_ms, tokenize_ms, clean_ms).

    Raises:
        FileNotFoundError: the folder, ``model.onnx`` or a tokenizer file is missing, or the
            model asks for ``keras_effattn.clean_text`` and its file cannot be found.
        ValueError: ``model.onnx`` is corrupt, not a keras_effattn export or beyond this
            onnxruntime (see `load_session`), or the tokenizer files do not belong to it.
        RuntimeError: onnxruntime failed to load the model for a reason other than the file.

    Example:
    ```python
    predictor = Predictor("exported/minilm")
    predictor.predict(["A wonderful film.", "Dull and far too long."])
    # [{"label": "pos", "probability": 0.97, "probabilities": {...}}, ...]
    ```
    """

    def __init__(self, model_dir, batch_size=None, threads=None, padding=None, clean=True):
        model_dir = os.fspath(model_dir)
        if not os.path.isdir(model_dir):
            raise FileNotFoundError(
                f"--model_dir {model_dir!r} is not a folder; pass the folder written by "
                "`python -m export.to_onnx`."
            )
        if batch_size is not None and (
            isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
        ):
            raise ValueError(f"batch_size must be None or a positive int, got {batch_size!r}.")
        if padding not in (None, "longest", "max_length"):
            raise ValueError(f"padding must be None, 'longest' or 'max_length', got {padding!r}.")
        path = os.path.join(model_dir, MODEL_FILE)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"No {MODEL_FILE} in {model_dir!r}; export a model there with "
                "`python -m export.to_onnx --model MODEL.keras --output_dir DIR`."
            )
        self.session = load_session(path, threads)
        self.metadata = meta.from_props(
            self.session.get_modelmeta().custom_metadata_map, where=path
        )
        self.tokenizer = WordPieceTokenizer.from_dir(model_dir)
        if self.tokenizer.vocabulary_sha256 != self.metadata.get("vocab_sha256"):
            raise ValueError(
                f"The vocabulary in {model_dir!r} "
                f"(sha256 {self.tokenizer.vocabulary_sha256[:12]}…) "
                f"is not the one {MODEL_FILE} was exported with "
                f"({str(self.metadata.get('vocab_sha256'))[:12]}…); copy the whole export folder."
            )
        if self.tokenizer.sequence_length != self.metadata["max_length"]:
            raise ValueError(
                f"tokenizer.json packs to {self.tokenizer.sequence_length} tokens but the model "
                f"was exported at max_length {self.metadata['max_length']}; re-export it."
            )
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        if sorted(self.input_names) != sorted(self.metadata["inputs"]):
            raise ValueError(
                f"{path} takes inputs {self.input_names} but its metadata says "
                f"{self.metadata['inputs']}; the file was modified, re-export it."
            )
        self.labels = list(self.metadata["labels"])
        self.max_length = self.metadata["max_length"]
        if batch_size is None:
            batch_size = DEFAULT_BATCH_SIZE if self.metadata["batch_invariant"] else 1
        self.batch_size = batch_size
        if padding is None:
            padding = "longest" if self.metadata["padding_invariant"] else "max_length"
        self.padding = padding
        self.text_cleaning = self.metadata["text_cleaning"] if clean else "none"
        self.clean_text = text_cleaner(self.text_cleaning)
        self.last_stats = {}

    def _feeds(self, batch):
        """The session's inputs from a tokenized batch (segment ids: zeros)."""
        return {
            name: np.zeros_like(batch["token_ids"]) if name == "segment_ids" else batch[name]
            for name in self.input_names
        }

    def predict_logits(self, texts):
        """Logits ``[N, num_classes]`` (float32) for a list of texts, in input order."""
        texts = _check_texts(texts)
        start_time = time.perf_counter()
        texts = [self.clean_text(t) for t in texts]
        clean_seconds = time.perf_counter() - start_time
        logits = np.zeros((len(texts), len(self.labels)), np.float32)
        # Group similar lengths so padding to each batch's longest text wastes little.
        order = np.argsort([len(t) for t in texts], kind="stable")
        if self.padding == "max_length":
            order = np.arange(len(texts))
        tokenize_seconds, batches = 0.0, 0
        for start in range(0, len(texts), self.batch_size):
            index = order[start : start + self.batch_size]
            tick = time.perf_counter()
            batch = self.tokenizer([texts[i] for i in index], padding=self.padding)
            tokenize_seconds += time.perf_counter() - tick
            logits[index] = self.session.run(["logits"], self._feeds(batch))[0]
            batches += 1
        total = time.perf_counter() - start_time
        self.last_stats = {
            "texts": len(texts),
            "batches": batches,
            "total_ms": 1000 * total,
            "per_text_ms": 1000 * total / max(len(texts), 1),
            "tokenize_ms": 1000 * tokenize_seconds,
            "clean_ms": 1000 * clean_seconds,
        }
        return logits

    def predict(self, texts):
        """One dict per text: ``label``, ``probability`` (of that label) and ``probabilities``."""
        probabilities = softmax(self.predict_logits(texts))
        results = []
        for row in probabilities:
            best = int(row.argmax())
            results.append(
                {
                    "label": self.labels[best],
                    "probability": float(row[best]),
                    "probabilities": {n: float(p) for n, p in zip(self.labels, row)},
                }
            )
        return results

    __call__ = predict

    @property
    def has_attention(self):
        """Whether the export carries the ``attention`` output (``--attention_output``)."""
        return meta.ATTENTION_OUTPUT in self.output_names

    def explain(self, texts):
        """Predictions with the attention the model's top layer paid to each word.

        Needs an export with the ``attention`` output (``python -m export.to_onnx
        --attention_output``). Each text is run alone, unpadded.

        Returns:
            One dict per text: the `predict` fields plus ``tokens`` (the WordPiece tokens the
            model read, with [CLS] and [SEP]), ``token_attention`` (one weight per token, summing
            to 1) and ``words`` (``[{"word", "attention"}]`` for each word read, within the
            truncation: the weights of its pieces summed, then shared out so the words sum
            to 1; [CLS] and [SEP] left out).

        Raises:
            ValueError: the export has no attention output.
        """
        if not self.has_attention:
            raise ValueError(
                "This export has no attention output; re-export with `python -m export.to_onnx "
                "... --attention_output` (the web page's --web export adds it by default)."
            )
        texts = _check_texts(texts)
        tokenizer = self.tokenizer
        results = []
        for text in texts:
            cleaned = self.clean_text(text)
            batch = tokenizer([cleaned], padding="longest")
            logits, attention = self.session.run(["logits", meta.ATTENTION_OUTPUT],
                                                 self._feeds(batch))
            weights = attention[0].astype(np.float64)
            probabilities = softmax(logits)[0]
            best = int(probabilities.argmax())
            words, position = [], 1  # after [CLS]
            limit = len(weights) - 1  # before [SEP]
            for word, ids in tokenizer.words(cleaned):
                if position >= limit:
                    break
                end = min(position + len(ids), limit)
                words.append({"word": word, "attention": float(weights[position:end].sum())})
                position = end
            total = sum(w["attention"] for w in words) or 1.0
            for w in words:
                w["attention"] /= total
            results.append({
                "label": self.labels[best],
                "probability": float(probabilities[best]),
                "probabilities": {n: float(p) for n, p in zip(self.labels, probabilities)},
                "tokens": [tokenizer.vocabulary[i] for i in batch["token_ids"][0]],
                "token_attention": [float(w) for w in weights],
                "words": words,
            })
        return results


def load_session(path, threads=None):
    """An onnxruntime CPU session for the ONNX file `path`, with `session_options`.

    Raises:
        ValueError: the file is not an ONNX model (damaged, truncated or another format:
            onnxruntime's ``INVALID_PROTOBUF``), or it is one this onnxruntime cannot run (an
            unknown operator or opset: ``INVALID_GRAPH``, ``NOT_IMPLEMENTED``, an opset
            ``FAIL``); each message names the fix.
        RuntimeError: onnxruntime failed for another reason (memory, threads, its own bug),
            with onnxruntime's message; the file is not blamed.
    """
    from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

    try:
        return ort.InferenceSession(
            path, session_options(threads), providers=["CPUExecutionProvider"]
        )
    except ort_errors.InvalidProtobuf as error:
        raise ValueError(
            f"{path} is not an ONNX model: onnxruntime cannot parse it (the file is damaged, "
            "truncated or in another format); copy it again or re-export it with "
            "`python -m export.to_onnx`."
        ) from error
    except (ort_errors.InvalidGraph, ort_errors.NotImplemented, ort_errors.Fail) as error:
        message = str(error)
        if isinstance(error, ort_errors.Fail) and "opset" not in message.lower():
            raise RuntimeError(f"onnxruntime could not load {path}: {message}") from error
        raise ValueError(
            f"{path} is an ONNX model this onnxruntime {ort.__version__} cannot run "
            f"({message.splitlines()[0][:300]}); install the onnxruntime version the export "
            "was verified with (its metadata 'versions'), or re-export with a lower --opset."
        ) from error
    except Exception as error:  # re-raised, with the file named
        raise RuntimeError(
            f"onnxruntime could not load {path} ({type(error).__name__}: {error})"
        ) from error


def session_options(threads=None):
    """onnxruntime options: full graph optimisation, no busy-waiting worker threads.

    onnxruntime's worker threads spin between operators by default. On a small CPU shared with
    other programs (a classroom machine, a 2-core VM) spinning threads steal the cores the
    work needs: on this project's shared 2-core machine, turning spinning off made MiniLM-L6
    at batch 1 / 128 tokens 5x faster (fp32 127 -> 25 ms, int8 62 -> 11 ms).
    """
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    if threads:
        options.intra_op_num_threads = int(threads)
    return options


def softmax(logits):
    """Row-wise softmax in float64 (stable for large logits)."""
    logits = np.asarray(logits, np.float64)
    shifted = np.exp(logits - logits.max(-1, keepdims=True))
    return shifted / shifted.sum(-1, keepdims=True)


def predict(model_dir, texts, **kwargs):
    """Classifies `texts` with the export in `model_dir` (see `Predictor` for arguments)."""
    return Predictor(model_dir, **kwargs).predict(texts)


def _check_texts(texts):
    if isinstance(texts, str):
        texts = [texts]
    texts = list(texts)
    if not texts:
        raise ValueError("No texts to classify; pass at least one non-empty text.")
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise ValueError(f"Text {index} is a {type(text).__name__}, not a str.")
        if not text.strip():
            raise ValueError(
                f"Text {index} is empty (or only whitespace); remove empty texts before "
                "classifying them."
            )
    return texts


# --------------------------------------------------------------------------------- CLI
def _parse_args(argv):
    parser = cli.ArgumentParser(
        prog="effattn-predict",
        description="Classify texts with an exported keras_effattn model (no TensorFlow).",
    )
    parser.add_argument("texts", nargs="*", metavar="TEXT", help="Texts to classify.")
    parser.add_argument("--model_dir", required=True, help="Folder written by export.to_onnx.")
    parser.add_argument("--input", help="A UTF-8 file with one text per line.")
    parser.add_argument("--json", action="store_true", help="Print one JSON object per line.")
    parser.add_argument(
        "--batch_size", type=int, default=None,
        help=f"Texts per batch (default: {DEFAULT_BATCH_SIZE}, or 1 for exports whose logits "
        "depend on the batch, such as dynamic int8).",
    )
    parser.add_argument("--threads", type=int, default=None, help="onnxruntime threads.")
    parser.add_argument(
        "--skip_empty", action="store_true", help="Skip empty lines instead of failing."
    )
    parser.add_argument(
        "--explain",
        action="store_true",
        help="Also show the words the model's top layer attended to most (exports with "
        "--attention_output).",
    )
    parser.add_argument(
        "--no_clean",
        action="store_true",
        help="Texts are already cleaned: skip the text cleaning the model's metadata asks for.",
    )
    return parser.parse_args(argv)


def _read_lines(handle, source, skip_empty):
    texts, empty = [], []
    try:
        lines = list(handle)
    except UnicodeDecodeError as error:
        raise ValueError(
            f"{source} is not UTF-8 text ({error.reason} at byte {error.start} of a line "
            "read); convert it to UTF-8 first, e.g. `iconv -f latin1 -t utf-8`."
        ) from error
    for number, line in enumerate(lines, start=1):
        line = line.rstrip("\r\n")
        if line.strip():
            texts.append(line)
        else:
            empty.append(number)
    if empty and not skip_empty:
        shown = ", ".join(map(str, empty[:10])) + (" ..." if len(empty) > 10 else "")
        raise ValueError(
            f"{source} has {len(empty)} empty line(s) (line {shown}); every line must be a text. "
            "Remove them or pass --skip_empty."
        )
    return texts


def main(argv=None):
    """The CLI; returns the exit status (`keras_effattn_runtime.cli`: 0 ok; 2 and one line for bad input,
    such as a missing or non-UTF-8 input file or a damaged model; 1 and a traceback for an
    internal error)."""
    return cli.guard(_main, sys.argv[1:] if argv is None else argv, verbose=False)


def _main(argv):
    args = _parse_args(argv)
    if args.texts and args.input:
        raise cli.UsageError("Give texts as arguments or --input FILE, not both.")
    if args.input:
        if not os.path.isfile(args.input):
            raise FileNotFoundError(f"--input {args.input!r} does not exist; pass a UTF-8 file "
                                    "with one text per line.")
        with open(args.input, encoding="utf-8") as handle:
            texts = _read_lines(handle, args.input, args.skip_empty)
    elif args.texts:
        texts = [t for t in args.texts if t.strip() or not args.skip_empty]
    else:
        texts = _read_lines(sys.stdin, "stdin", args.skip_empty)
    predictor = Predictor(
        args.model_dir,
        batch_size=args.batch_size,
        threads=args.threads,
        clean=not args.no_clean,
    )
    if args.explain and not predictor.has_attention:
        raise cli.UsageError(
            f"--explain needs an export with an attention output; {args.model_dir!r} has none. "
            "Re-export with `python -m export.to_onnx ... --attention_output`."
        )
    results = predictor.predict(texts)
    stats = predictor.last_stats
    if args.explain:
        for result, explained in zip(results, predictor.explain(texts)):
            result["words"] = explained["words"]
    for text, result in zip(texts, results):
        if args.json:
            print(json.dumps({"text": text, **result}, ensure_ascii=False))
        else:
            snippet = text if len(text) <= 60 else text[:57] + "..."
            print(f"{result['label']}\t{result['probability']:.4f}\t{snippet}")
            if args.explain:
                top = sorted(result["words"], key=lambda w: -w["attention"])[:5]
                print("\tattended to: " + ", ".join(
                    f"{w['word']} {w['attention']:.3f}" for w in top))
    print(
        f"{stats['texts']} text(s) in {stats['batches']} batch(es): {stats['total_ms']:.1f} ms, "
        f"{stats['per_text_ms']:.2f} ms/text ({predictor.metadata['precision']}, padding "
        f"{predictor.padding}, cleaning {predictor.text_cleaning} {stats['clean_ms']:.1f} ms, "
        f"tokenization {stats['tokenize_ms']:.1f} ms)",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
