"""Dataset statistics: class balance, lengths in words and tokens, truncation rate, and plots.

`dataset_statistics` returns a JSON-ready dict; `plot_statistics` draws the same figures into
one PNG, written atomically (rendered in memory, then `keras_effattn.utils.io.write_bytes`:
a temporary file beside the destination, fsync, rename), so a crash never leaves half a PNG. Plots use matplotlib's Agg
canvas directly and never touch `pyplot`'s global state or backend.

The truncation rate at `max_length` is the share of examples whose token count plus the
tokenizer's special tokens (`[CLS] a [SEP]`: 2; `[CLS] a [SEP] b [SEP]`: 3) exceeds
`max_length`, i.e. those a packer would cut.
"""

import io
import pathlib

import numpy as np

_PERCENTILES = (50, 90, 95, 99)


def token_lengths(texts, tokenizer, batch_size=256):
    """Token counts of `texts` as an `int64` array.

    Args:
        texts: list of `str`.
        tokenizer: a callable mapping one `str` to a sequence of tokens (a list, an array, a
            1-D tensor), e.g. `str.split` or a KerasHub tokenizer without a fixed
            `sequence_length`; KerasHub tokenizers (detected by class) are called on batches
            of `batch_size` texts, other callables once per text.
        batch_size: int, default 256.

    Returns:
        `np.ndarray` of shape `[len(texts)]`.
    """
    if not callable(tokenizer):
        raise ValueError(
            f"tokenizer must be callable (str -> tokens), got {type(tokenizer).__name__}; pass "
            "e.g. a keras_hub tokenizer or str.split."
        )
    texts = list(texts)
    if _is_keras_hub(tokenizer):
        out = []
        for start in range(0, len(texts), batch_size):
            batch = texts[start : start + batch_size]
            result = tokenizer(batch)
            if hasattr(result, "row_lengths"):
                out.extend(np.asarray(result.row_lengths()).tolist())
            elif len(result) == len(batch):
                out.extend(len(r) for r in result)
            else:
                raise ValueError(
                    f"tokenizer returned {len(result)} sequences for a batch of {len(batch)} "
                    "texts; use a tokenizer without a fixed sequence_length."
                )
        return np.asarray(out, np.int64)
    return np.asarray([len(tokenizer(t)) for t in texts], np.int64)


def _is_keras_hub(obj):
    return any(cls.__module__.startswith("keras_hub.") for cls in type(obj).__mro__)


def dataset_statistics(dataset, tokenizer=None, max_length=None, num_special_tokens=None):
    """Summarises a `TextDataset`.

    Args:
        dataset: a `TextDataset`.
        tokenizer: optional callable, see `token_lengths`. Needed for token lengths and the
            truncation rate.
        max_length: optional int, the model's sequence length; needs `tokenizer`.
        num_special_tokens: int, default 2 for single texts and 3 for pairs.

    Returns:
        A dict: `name`, `num_examples`, `is_pair`; `class_balance` (counts, fractions,
        `imbalance_ratio` = largest / smallest class) or `label_summary` for regression;
        `words` (mean, std, min, p50, p90, p95, p99, max); with a tokenizer `tokens` likewise;
        with `max_length` also `max_length`, `num_special_tokens`, `truncation_rate` (share of
        examples cut) and `truncated_token_fraction` (share of all tokens cut).

    Example (with 1,000/class IMDB test reviews, MiniLM's WordPiece tokenizer and
    ``max_length=256`` the truncation rate is 0.40):
    >>> from keras_effattn.data.dataset import TextDataset
    >>> ds = TextDataset(["a fine film", "dull", "so very long and dull", "great"],
    ...                  [1, 0, 0, 1], class_names=("neg", "pos"))
    >>> stats = dataset_statistics(ds, tokenizer=str.split, max_length=4)
    >>> stats["num_examples"], stats["truncation_rate"]  # 2 + 2 special tokens: 2 of 4 cut
    (4, 0.5)
    """
    return _statistics(dataset, tokenizer, max_length, num_special_tokens)[0]


def plot_statistics(dataset, path, tokenizer=None, max_length=None, num_special_tokens=None):
    """Draws class balance and length histograms into a PNG at `path`, atomically.

    Args:
        dataset, tokenizer, max_length, num_special_tokens: as for `dataset_statistics`.
        path: destination `.png` file; its folder is created if needed.

    Returns:
        The statistics dict (as `dataset_statistics`).
    """
    path = pathlib.Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"plot path must end with .png, got {str(path)!r}.")
    stats, lengths = _statistics(dataset, tokenizer, max_length, num_special_tokens)
    png = _render(dataset, stats, lengths)
    from keras_effattn.utils.io import write_bytes

    write_bytes(path, png)
    return stats


def format_statistics(stats):
    """A short Markdown table of a statistics dict, for reports."""
    rows = [("examples", f"{stats['num_examples']:,}")]
    if "class_balance" in stats:
        for name, count in stats["class_balance"]["counts"].items():
            frac = stats["class_balance"]["fractions"][name]
            rows.append((f"class {name}", f"{count:,} ({frac:.1%})"))
    else:
        s = stats["label_summary"]
        rows.append(("label mean ± std", f"{s['mean']:.3f} ± {s['std']:.3f}"))
    for key in ("words", "tokens"):
        if key in stats:
            s = stats[key]
            summary = f"{s['mean']:.1f} / {s['p50']:.0f} / {s['p95']:.0f} / {s['max']:,}"
            rows.append((f"{key} mean / p50 / p95 / max", summary))
    if "truncation_rate" in stats:
        rows.append(
            (f"truncated at {stats['max_length']} tokens", f"{stats['truncation_rate']:.1%}")
        )
    lines = [f"**{stats['name']}**", "", "| statistic | value |", "| --- | --- |"]
    lines += [f"| {k} | {v} |" for k, v in rows]
    return "\n".join(lines) + "\n"


def _statistics(dataset, tokenizer, max_length, num_special_tokens):
    if not hasattr(dataset, "texts") or not hasattr(dataset, "labels"):
        raise ValueError(
            f"dataset must be a TextDataset, got {type(dataset).__name__}; build one with "
            "keras_effattn.data.TextDataset(texts, labels, class_names)."
        )
    if max_length is not None:
        if isinstance(max_length, bool) or not isinstance(max_length, (int, np.integer)):
            raise ValueError(f"max_length must be an int, got {max_length!r}.")
        if max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {max_length}.")
        if tokenizer is None:
            raise ValueError(
                "max_length needs a tokenizer: the truncation rate counts tokens, not words; "
                "pass the model's tokenizer (e.g. preprocessor.tokenizer)."
            )
    if num_special_tokens is None:
        num_special_tokens = 3 if dataset.is_pair else 2
    if num_special_tokens < 0:
        raise ValueError(f"num_special_tokens must be >= 0, got {num_special_tokens}.")

    segments = [dataset.texts] + ([dataset.text_pairs] if dataset.is_pair else [])
    words = sum(np.asarray([len(t.split()) for t in seg], np.int64) for seg in segments)
    stats = {"name": dataset.name, "num_examples": len(dataset), "is_pair": dataset.is_pair}
    if dataset.is_regression:
        y = dataset.labels.astype(np.float64)
        stats["label_summary"] = {
            "mean": float(y.mean()),
            "std": float(y.std()),
            "min": float(y.min()),
            "max": float(y.max()),
        }
    else:
        counts = dataset.class_counts()
        present = counts[counts > 0]
        stats["class_balance"] = {
            "counts": {n: int(c) for n, c in zip(dataset.class_names, counts)},
            "fractions": {n: float(c / len(dataset)) for n, c in zip(dataset.class_names, counts)},
            "imbalance_ratio": float(present.max() / present.min()),
        }
    stats["words"] = _summary(words)
    lengths = {"words": words}
    if tokenizer is not None:
        tokens = sum(token_lengths(seg, tokenizer) for seg in segments)
        stats["tokens"] = _summary(tokens)
        lengths["tokens"] = tokens
        if max_length is not None:
            total = tokens + num_special_tokens
            stats["max_length"] = int(max_length)
            stats["num_special_tokens"] = int(num_special_tokens)
            stats["truncation_rate"] = float(np.mean(total > max_length))
            cut = np.clip(total - max_length, 0, None).sum()
            stats["truncated_token_fraction"] = float(cut / max(int(total.sum()), 1))
    return stats, lengths


def _summary(values):
    values = np.asarray(values, np.float64)
    out = {
        "mean": float(values.mean()),
        "std": float(values.std()),
        "min": int(values.min()),
        "max": int(values.max()),
    }
    for p in _PERCENTILES:
        out[f"p{p}"] = float(np.percentile(values, p))
    return out


def _render(dataset, stats, lengths):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = 1 + len(lengths)
    fig = Figure(figsize=(4.2 * panels, 3.4))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, panels)
    ax = axes[0]
    if dataset.is_regression:
        ax.hist(dataset.labels, bins=20, color="tab:purple")
        ax.set_title("label distribution")
        ax.set_xlabel("score")
    else:
        counts = stats["class_balance"]["counts"]
        ax.bar(list(counts), list(counts.values()), color="tab:blue")
        ax.set_title(f"class balance (ratio {stats['class_balance']['imbalance_ratio']:.2f})")
        ax.tick_params(axis="x", labelrotation=20)
    ax.set_ylabel("examples")
    for ax, (key, values) in zip(axes[1:], lengths.items()):
        ax.hist(values, bins=40, color="tab:green" if key == "words" else "tab:orange")
        ax.axvline(stats[key]["p50"], color="black", linestyle=":", label="median")
        title = f"length in {key}"
        if key == "tokens" and "max_length" in stats:
            limit = stats["max_length"] - stats["num_special_tokens"]
            label = f"max_length {stats['max_length']} - {stats['num_special_tokens']} special"
            ax.axvline(limit, color="tab:red", label=label)
            title += f" ({stats['truncation_rate']:.1%} truncated)"
        ax.set_title(title)
        ax.set_xlabel(key)
        ax.legend(fontsize="small")
    fig.suptitle(f"{stats['name']}: {stats['num_examples']:,} examples")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()
