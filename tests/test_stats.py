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
