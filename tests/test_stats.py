import math

import numpy as np
import pytest

from coursekit.stats import mcnemar, paired_difference, paired_summary, t_critical_95


def test_paired_difference_by_hand():
    r = paired_difference([0.80, 0.822, 0.811], [0.79, 0.81, 0.80])
    d = np.array([0.01, 0.012, 0.011])
    assert np.allclose(r["diffs"], d) and math.isclose(r["mean"], d.mean())
    half = 4.303 * d.std(ddof=1) / math.sqrt(3)
    assert np.allclose(r["ci95"], (d.mean() - half, d.mean() + half)) and r["above_noise"]
    noisy = paired_difference([0.80, 0.78, 0.83], [0.79, 0.80, 0.80])
    assert not noisy["above_noise"]
    assert "within the seed-to-seed noise" in paired_summary([0.80, 0.78, 0.83], [0.79, 0.80, 0.80], "kd - alone")
    assert "one seed" in paired_summary([0.8], [0.7])
    with pytest.raises(ValueError, match="equal-length"):
        paired_difference([0.1, 0.2], [0.1])


def test_t_critical_values():
    assert t_critical_95(2) == 4.303 and t_critical_95(100) == 1.96
    with pytest.raises(ValueError, match="df: 0 is not allowed"):
        t_critical_95(0)


def test_mcnemar_exact_binomial():
    a = np.array([1, 1, 1, 1, 1, 1, 0, 1, 1, 1], dtype=bool)
    b = np.array([0, 0, 0, 0, 0, 0, 0, 1, 1, 1], dtype=bool)
    r = mcnemar(a, b)
    assert r["a_only"] == 6 and r["b_only"] == 0
    assert math.isclose(r["p_value"], 2 / 2**6)  # all 6 discordant pairs favour A
    assert mcnemar(a, a)["p_value"] == 1.0


def test_bootstrap_perplexity_ratio_is_paired_over_windows():
    from coursekit.stats import bootstrap_perplexity_ratio

    rng = np.random.default_rng(0)
    base = rng.uniform(3.0, 4.0, size=16) * 255  # per-window summed losses, 255 scored tokens each
    a = {"window_nll": list(base), "window_tokens": [255] * 16}
    same = bootstrap_perplexity_ratio(a, a)
    assert same["ratio"] == pytest.approx(1.0) and same["low"] == pytest.approx(1.0) and "within the noise" in same["text"]
    worse = {"window_nll": list(base + 0.1 * 255), "window_tokens": [255] * 16}  # every window 0.1 nats worse
    r = bootstrap_perplexity_ratio(a, worse)
    assert r["ratio"] == pytest.approx(np.exp(0.1)) and r["low"] > 1 and "B higher" in r["text"], "paired: no noise"
    noisy = {"window_nll": list(base[::-1]), "window_tokens": [255] * 16}  # same windows' losses, shuffled
    assert bootstrap_perplexity_ratio(a, noisy)["low"] < 1 < bootstrap_perplexity_ratio(a, noisy)["high"]
    with pytest.raises(ValueError, match="same windows"):
        bootstrap_perplexity_ratio(a, {"window_nll": list(base[:8]), "window_tokens": [255] * 8})
