"""A text classifier without pretraining: TF-IDF features of words and word pairs, then logistic regression
(scikit-learn), its regularisation strength chosen on the validation split. Chapter 07's fair baseline for what
pretraining buys: unlike a transformer trained from random weights for the same few optimizer steps, it is fitted
to convergence on whatever labelled sentences it is given (a convex problem, solved exactly by L-BFGS)."""

from __future__ import annotations

from .textdata import TextSplit
from .validate import integer

__all__ = ["TFIDF_CS", "tfidf_logreg", "text_accuracy"]

TFIDF_CS = (0.1, 1.0, 10.0, 100.0)  # inverse regularisation strengths tried on the validation split


def tfidf_logreg(train: TextSplit, val: TextSplit, *, cs=TFIDF_CS, max_ngram: int = 2, seed: int = 0) -> dict:
    """Fit TF-IDF (1..``max_ngram``-grams of lower-cased words, sublinear term frequency) + logistic regression on
    ``train`` for each C in ``cs``, keep the C with the best ``val`` accuracy (the first on ties). The vocabulary is
    ``train``'s own: a word never seen in its labelled sentences has no feature. Returns {"model": the fitted
    scikit-learn pipeline, "c": chosen C, "val_accuracy": its validation accuracy, "val_by_c": {C: accuracy},
    "features": vocabulary size}."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    integer("max_ngram", max_ngram, lo=1)
    if not cs or not all(isinstance(c, (int, float)) and c > 0 for c in cs):
        raise ValueError(f"cs: {cs!r} is not allowed; use a non-empty list of positive numbers")
    y = train.labels.numpy()
    by_c, best = {}, None
    for c in cs:
        model = make_pipeline(TfidfVectorizer(ngram_range=(1, max_ngram), sublinear_tf=True, lowercase=True),
                              LogisticRegression(C=float(c), max_iter=5000, random_state=seed))
        model.fit(list(train.texts), y)
        by_c[float(c)] = text_accuracy(model, val)
        if best is None or by_c[float(c)] > by_c[best[0]]:
            best = (float(c), model)
    c, model = best
    return {"model": model, "c": c, "val_accuracy": by_c[c], "val_by_c": by_c,
            "features": len(model[0].vocabulary_)}


def text_accuracy(model, split: TextSplit) -> float:
    """Share of ``split``'s sentences whose predicted class (``model.predict`` on the raw texts) is the label."""
    pred = model.predict(list(split.texts))
    return float((pred == split.labels.numpy()).mean())
