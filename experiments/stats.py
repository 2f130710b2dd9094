"""Statistics for experiment tables: mean ± std over seeds and significance tests vs a baseline.

- `mean_std`: the mean and sample standard deviation (ddof=1) of the finite values.
- `welch_ttest`: Welch's unequal-variance t-test between two groups of per-seed scores
  (scipy.stats.ttest_ind with ``equal_var=False``); needs at least two runs per group.
- `paired_bootstrap`: a paired bootstrap over examples of the difference in a per-example score
  (e.g. correctness 0/1 of two models on the same test set): mean difference, 95% interval and a
  two-sided p-value; usable with a single seed.
- `compare_groups`: one summary row per group (mean, std, n, difference to the baseline group and
  Welch's p-value), ready for a CSV or a Markdown table.

Example:

>>> round(mean_std([0.80, 0.82, 0.84])["std"], 3)
0.02
>>> welch_ttest([0.80, 0.81, 0.82], [0.70, 0.71, 0.72])["p"] < 0.01
True

References:
    Welch, "The generalization of Student's problem when several different population variances
    are involved", Biometrika 34, 1947; Efron & Tibshirani, "An Introduction to the Bootstrap",
    1993; Koehn, "Statistical Significance Tests for Machine Translation Evaluation", EMNLP 2004
    (paired bootstrap).
"""

import math

import numpy as np

from experiments.sweep import as_float


def _finite(values):
    array = np.asarray([as_float(v) for v in values], dtype=np.float64)
    return array[np.isfinite(array)]


def mean_std(values):
    """Mean and sample std (ddof=1) of the finite values.

    Returns:
        dict ``{"mean", "std", "n"}``; ``std`` is NaN for n < 2 and ``mean`` NaN for n == 0.
    """
    array = _finite(values)
    n = int(array.size)
    mean = float(array.mean()) if n else math.nan
    std = float(array.std(ddof=1)) if n > 1 else math.nan
    return {"mean": mean, "std": std, "n": n}


def welch_ttest(a, b):
    """Welch's two-sided t-test of mean(a) != mean(b).

    Returns:
        dict ``{"t", "p", "n_a", "n_b"}``; ``t`` and ``p`` are NaN when a group has fewer than
        two finite values or both groups are constant (the test is undefined).
    """
    from scipy import stats

    a, b = _finite(a), _finite(b)
    out = {"t": math.nan, "p": math.nan, "n_a": int(a.size), "n_b": int(b.size)}
    if a.size < 2 or b.size < 2 or (np.ptp(a) == 0 and np.ptp(b) == 0):
        return out
    result = stats.ttest_ind(a, b, equal_var=False)
    out.update(t=float(result.statistic), p=float(result.pvalue))
    return out


def paired_bootstrap(score_a, score_b, num_resamples=10000, seed=0):
    """Paired bootstrap over examples of ``mean(score_a - score_b)``.

    Args:
        score_a, score_b: per-example scores of two systems on the same examples, same order
            (e.g. 1.0 where the prediction is correct).
        num_resamples: int >= 100, default 10000.
        seed: int, default 0.

    Returns:
        dict ``{"diff", "ci_low", "ci_high", "p", "n"}``: the observed mean difference, its 95%
        percentile interval, and the two-sided p-value ``2 * min(P(d* <= 0), P(d* >= 0))``
        (capped at 1) of the resampled differences.
    """
    a = np.asarray(score_a, dtype=np.float64).reshape(-1)
    b = np.asarray(score_b, dtype=np.float64).reshape(-1)
    if a.shape != b.shape or a.size == 0:
        raise ValueError(
            f"paired_bootstrap needs two non-empty score arrays of the same length (one score "
            f"per example, same order), got {a.size} and {b.size}."
        )
    if not isinstance(num_resamples, int) or num_resamples < 100:
        raise ValueError(f"num_resamples must be an int >= 100, got {num_resamples!r}.")
    diff = a - b
    rng = np.random.default_rng(seed)
    index = rng.integers(0, diff.size, size=(num_resamples, diff.size))
    resampled = diff[index].mean(axis=1)
    p = 2.0 * min(np.mean(resampled <= 0.0), np.mean(resampled >= 0.0))
    return {
        "diff": float(diff.mean()),
        "ci_low": float(np.percentile(resampled, 2.5)),
        "ci_high": float(np.percentile(resampled, 97.5)),
        "p": float(min(p, 1.0)),
        "n": int(diff.size),
    }


def bootstrap_interval(scores, num_resamples=10000, seed=0):
    """95 % percentile bootstrap interval ``(low, high)`` of ``mean(scores)`` over examples
    (e.g. 1.0 per correct prediction: an accuracy's interval)."""
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    result = paired_bootstrap(scores, np.zeros_like(scores), num_resamples, seed)
    return result["ci_low"], result["ci_high"]


def compare_groups(rows, group_key, metrics, baseline=None):
    """Summarises rows per group and tests each group against the baseline group.

    Args:
        rows: list of dicts (e.g. sweep results, one per seed and group).
        group_key: the key whose value names the group (e.g. ``"variant"``).
        metrics: list of metric keys to summarise.
        baseline: the baseline group's name, or None for no test.

    Returns:
        A list of dicts, one per group in first-seen order: ``group_key``, ``n`` and for each
        metric ``<m>_mean``, ``<m>_std``, and with a baseline ``<m>_diff`` (group mean minus
        baseline mean) and ``<m>_p_welch``.
    """
    groups = {}
    for row in rows:
        if group_key not in row:
            raise ValueError(f"A row has no {group_key!r} key to group by: {sorted(row)}.")
        groups.setdefault(str(row[group_key]), []).append(row)
    if baseline is not None and str(baseline) not in groups:
        raise ValueError(
            f"Baseline group {baseline!r} is not among the groups {sorted(groups)}; pick one of "
            "them."
        )
    summary = []
    for name, members in groups.items():
        out = {group_key: name, "n": len(members)}
        for metric in metrics:
            values = [m.get(metric) for m in members]
            stats = mean_std(values)
            out[f"{metric}_mean"] = stats["mean"]
            out[f"{metric}_std"] = stats["std"]
            if baseline is not None:
                base = [m.get(metric) for m in groups[str(baseline)]]
                out[f"{metric}_diff"] = stats["mean"] - mean_std(base)["mean"]
                out[f"{metric}_p_welch"] = (
                    math.nan if name == str(baseline) else welch_ttest(values, base)["p"]
                )
        summary.append(out)
    return summary


def format_mean_std(mean, std, digits=3):
    """``"0.812 ± 0.004"``; just the mean when std is NaN; ``"n/a"`` when the mean is NaN."""
    mean, std = as_float(mean), as_float(std)
    if not math.isfinite(mean):
        return "n/a"
    if not math.isfinite(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"
