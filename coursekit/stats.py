"""Is a difference real? Paired comparisons over seeds and on test-set predictions.

A technique is compared with its baseline on the same schedule and seeds, so the runs pair up by seed; the
per-seed differences, their mean and a t-based 95% interval say whether the gain is above the seed-to-seed
noise. ``mcnemar`` compares two models on the same test examples (McNemar 1947, exact binomial form);
``bootstrap_perplexity_ratio`` two language models on the same text windows (a paired bootstrap, Efron 1979).
Introduced in notebooks/08_transformer_distillation.ipynb.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["t_critical_95", "paired_summary", "paired_difference", "mcnemar", "bootstrap_perplexity_ratio"]

# two-sided 95% critical values of Student's t for 1..10 degrees of freedom
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}


def t_critical_95(df: int) -> float:
    """Two-sided 95% critical value of Student's t with ``df`` degrees of freedom (1.96 beyond 30)."""
    if df < 1:
        raise ValueError(f"df: {df!r} is not allowed; use an integer >= 1 (at least 2 paired runs)")
    if df in _T95:
        return _T95[df]
    return 2.086 if df <= 20 else 2.042 if df <= 30 else 1.96


def paired_difference(a, b) -> dict:
    """Per-pair differences a - b (same seeds, same order) and their mean, std and 95% interval (None with one pair).

    Returns {"diffs", "mean", "std", "ci95": (low, high) or None, "above_noise": bool (the interval excludes 0)}."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ValueError(f"paired runs must be two equal-length lists, got {a.shape} and {b.shape}")
    d = a - b
    if len(d) == 1:
        return {"diffs": d, "mean": float(d[0]), "std": None, "ci95": None, "above_noise": False}
    std = float(d.std(ddof=1))
    half = t_critical_95(len(d) - 1) * std / math.sqrt(len(d))
    low, high = float(d.mean()) - half, float(d.mean()) + half
    return {"diffs": d, "mean": float(d.mean()), "std": std, "ci95": (low, high), "above_noise": low > 0 or high < 0}


def paired_summary(a, b, label: str = "a - b") -> str:
    """One line for a notebook: the per-seed differences in points, their mean and 95% interval, and a verdict."""
    r = paired_difference(a, b)
    per = ", ".join(f"{100 * x:+.2f}" for x in r["diffs"])
    if r["ci95"] is None:
        return f"{label}: {100 * r['mean']:+.2f} points (one seed: no spread, no verdict)"
    low, high = r["ci95"]
    verdict = "above the seed-to-seed noise" if r["above_noise"] else "within the seed-to-seed noise"
    return (f"{label}: per seed [{per}] points, mean {100 * r['mean']:+.2f}, 95% interval [{100 * low:+.2f}, "
            f"{100 * high:+.2f}] -> {verdict}")


def mcnemar(correct_a, correct_b) -> dict:
    """Exact McNemar test of two models on the same examples: ``correct_a``, ``correct_b`` boolean arrays (N,).

    Returns {"a_only": examples only A gets right, "b_only", "p_value": two-sided exact binomial p}."""
    a, b = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"mcnemar: {a.shape} and {b.shape} differ; compare predictions on the same examples")
    n01, n10 = int((a & ~b).sum()), int((~a & b).sum())
    n = n01 + n10
    k = min(n01, n10)
    p = 1.0 if n == 0 else min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n)
    return {"a_only": n01, "b_only": n10, "p_value": p}


def bootstrap_perplexity_ratio(a: dict, b: dict, *, samples: int = 2000, seed: int = 0) -> dict:
    """How sure is "B's perplexity is x times A's"? ``a`` and ``b`` are ``llm.perplexity`` results on the same
    windows; the windows are resampled with replacement (the same draw for both models: a paired bootstrap) and the
    ratio ppl_b / ppl_a recomputed on each resample.

    Returns {"ratio", "low", "high" (the 2.5th and 97.5th percentiles), "windows", "text": one line, three significant
    digits, so a ratio of 2e-7 reads as one}; an interval that contains 1 means the two are within the noise of which
    text was scored."""
    if a["window_tokens"] != b["window_tokens"]:
        raise ValueError("bootstrap_perplexity_ratio: a and b were not scored on the same windows")
    na, nb = np.asarray(a["window_nll"]), np.asarray(b["window_nll"])
    tok = np.asarray(a["window_tokens"], dtype=float)
    idx = np.random.default_rng(seed).integers(0, len(tok), size=(samples, len(tok)))
    log_ratio = (nb[idx].sum(1) - na[idx].sum(1)) / tok[idx].sum(1)
    low, high = np.exp(np.percentile(log_ratio, [2.5, 97.5]))
    ratio = math.exp((nb.sum() - na.sum()) / tok.sum())
    verdict = "within the noise" if low <= 1 <= high else ("B higher" if low > 1 else "B lower")
    return {"ratio": ratio, "low": float(low), "high": float(high), "windows": len(tok),
            "text": f"perplexity ratio {ratio:.3g} (95% bootstrap interval {low:.3g} to {high:.3g} over {len(tok)} "
                    f"windows): {verdict}"}
