import pytest
import torch

from coursekit.textbaseline import text_accuracy, tfidf_logreg
from coursekit.textdata import TextSplit


def _split(texts, labels):
    return TextSplit([torch.tensor([0])] * len(texts), torch.tensor(labels), list(texts))


def test_tfidf_logreg_learns_words_chooses_c_on_validation_and_scores_held_out_text():
    pytest.importorskip("sklearn")
    good, bad = ["a good film", "good and fun", "truly good"], ["a bad film", "bad and dull", "truly bad"]
    train = _split(good + bad, [1, 1, 1, 0, 0, 0])
    val = _split(["good fun", "dull film", "bad"], [1, 0, 0])
    out = tfidf_logreg(train, val, cs=(0.01, 10.0))
    assert set(out["val_by_c"]) == {0.01, 10.0} and out["c"] in out["val_by_c"]
    assert out["val_accuracy"] == max(out["val_by_c"].values())
    assert out["features"] == len(out["model"][0].vocabulary_) and "good" in out["model"][0].vocabulary_
    assert text_accuracy(out["model"], _split(["so good", "so bad"], [1, 0])) == 1.0


def test_tfidf_logreg_refuses_bad_settings():
    pytest.importorskip("sklearn")
    s = _split(["a", "b"], [0, 1])
    with pytest.raises(ValueError, match="cs: \\(\\) is not allowed"):
        tfidf_logreg(s, s, cs=())
    with pytest.raises(ValueError, match="max_ngram: 0 is not allowed"):
        tfidf_logreg(s, s, max_ngram=0)
