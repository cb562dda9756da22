from __future__ import annotations

import json

import numpy as np
import pytest

from retrieval_kit.index import SearchResult
from retrieval_kit.metrics import global_average_precision
from retrieval_kit.predict import ConfidenceModel, confidence_features


def synthetic(seed, n_q=600, k=10):
    """Rows whose top-1 score says nothing; correctness follows the predicted label's vote share."""
    rng = np.random.default_rng(seed)
    scores = -np.sort(-rng.uniform(0.3, 0.9, (n_q, k)), axis=1).astype(np.float32)
    ids = np.arange(n_q * k).reshape(n_q, k)
    id_to_label = {}
    m = rng.integers(1, k + 1, n_q)  # neighbours with the predicted label
    for q in range(n_q):
        same = {0, *rng.choice(np.arange(1, k), m[q] - 1, replace=False).tolist()}
        for j in range(k):
            id_to_label[int(ids[q, j])] = q if j in same else -1 - int(rng.integers(0, 10**6))
    correct = rng.random(n_q) < 1 / (1 + np.exp(-10 * (m / k - 0.55)))
    solution = {}
    for q in range(n_q):
        if correct[q]:
            solution[q] = [q]
        else:  # wrong: another landmark or a non-landmark query
            solution[q] = [] if rng.random() < 0.5 else [-5]
    return SearchResult(scores, ids), id_to_label, correct, solution


def gap(labels, conf, solution):
    return global_average_precision(
        {q: (lab, float(c)) for q, (lab, c) in enumerate(zip(labels, conf))}, solution
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_learned_confidence_ranks_better_than_the_top1_score(seed):
    result, id_to_label, correct, solution = synthetic(seed)
    n = len(correct) // 2
    train = SearchResult(result.scores[:n], result.ids[:n])
    test = SearchResult(result.scores[n:], result.ids[n:])
    cm = ConfidenceModel(k=10)
    f_train = cm.features(train, id_to_label)
    cm.fit(f_train, correct[:n])
    f_test = cm.features(test, id_to_label)
    prob = cm.predict_confidence(f_test)
    assert ((prob >= 0) & (prob <= 1)).all()
    test_solution = {q - n: solution[q] for q in range(n, len(correct))}
    raw = gap(f_test.labels, test.scores[:, 0], test_solution)
    learned = gap(f_test.labels, prob, test_solution)
    assert learned > raw + 0.15, (raw, learned)  # measured: ~0.35 -> ~0.65
    # the features that carry the vote share (share, summed score) get the two largest weights
    top2 = {cm.feature_names[i] for i in np.argsort(-np.abs(cm.coef_))[:2]}
    assert top2 == {"vote_share", "label_score_sum"}


def test_coefficients_match_sklearn():
    sklearn = pytest.importorskip("sklearn.linear_model")
    result, id_to_label, correct, _ = synthetic(3)
    pen = np.random.default_rng(0).random(len(correct))
    for l2 in (0.1, 1.0, 10.0):
        cm = ConfidenceModel(l2=l2)
        f = cm.features(result, id_to_label, distractor_penalty=pen)
        cm.fit(f, correct)
        z = (f.values - f.values.mean(0)) / f.values.std(0)
        ref = sklearn.LogisticRegression(C=1 / l2, tol=1e-12, max_iter=10_000).fit(z, correct)
        np.testing.assert_allclose(cm.coef_, ref.coef_[0], atol=1e-5)
        np.testing.assert_allclose(cm.intercept_, ref.intercept_[0], atol=1e-5)
        np.testing.assert_allclose(cm.predict_confidence(f), ref.predict_proba(z)[:, 1], atol=1e-6)


def test_features_by_hand():
    r = SearchResult(
        np.array([[0.9, 0.8, 0.7, 0.6], [0.5, 0.4, -np.inf, -np.inf], [-np.inf] * 4], np.float32),
        np.array([[1, 2, 3, 4], [3, 3, -1, -1], [-1] * 4]),
    )
    id_to_label = {1: "a", 2: "b", 3: "a", 4: "a"}
    inl = np.array([[5, 40, 30, -1], [0, 2, -1, -1], [-1] * 4])
    f = confidence_features(r, id_to_label, k=3, distractor_penalty=[0.1, 0.2, 0.3], inliers=inl)
    assert f.labels == ["a", "a", None]
    assert f.names == (
        "top1_score", "margin", "vote_share", "label_score_sum", "distractor_penalty",
        "log_inliers",
    )  # fmt: skip
    want = [
        [0.9, 0.9 - 0.8, 2 / 3, 0.9 + 0.7, 0.1, np.log1p(30)],  # col 3 is beyond k=3
        [0.5, 0.5 - 0.4, 1.0, 0.9, 0.2, np.log1p(2)],  # no other label: minus the lowest
        [0, 0, 0, 0, 0, 0],
    ]
    np.testing.assert_allclose(f.values, want, rtol=1e-6, atol=1e-7)
    # method="vote": "b" sums 0.8 + 0.7 = 1.5 over the top 3 and beats "a" (0.9)
    f = confidence_features(r, {1: "a", 2: "b", 3: "b", 4: "a"}, k=3, method="vote")
    assert f.labels == ["b", "b", None]
    np.testing.assert_allclose(f.values[0], [0.9, 0.8 - 0.9, 2 / 3, 1.5], rtol=1e-6)


def test_save_load_round_trip_and_crafted_files(tmp_path):
    result, id_to_label, correct, _ = synthetic(4, n_q=200)
    inl = np.random.default_rng(1).integers(0, 80, result.ids.shape)
    cm = ConfidenceModel(k=5, l2=0.5)
    f = cm.features(result, id_to_label, inliers=inl)
    cm.fit(f, correct)
    path = tmp_path / "conf.json"
    cm.save(path)
    back = ConfidenceModel.load(path)
    np.testing.assert_array_equal(back.predict_confidence(f), cm.predict_confidence(f))
    assert (back.k, back.method, back.l2, back.feature_names) == (5, "nn", 0.5, cm.feature_names)

    good = json.loads(path.read_text())
    bad_cases = {
        "garbage.json": "not json {",
        "other.json": json.dumps({**good, "format": "pickle"}),
        "short.json": json.dumps({**good, "coef": good["coef"][:-1]}),
        "text.json": json.dumps({**good, "mean": ["__import__('os')"] * len(good["mean"])}),
        "nan.json": json.dumps({**good, "intercept": float("nan")}),
        "zero.json": json.dumps({**good, "scale": [0.0] * len(good["scale"])}),
        "missing.json": json.dumps({k: v for k, v in good.items() if k != "feature_names"}),
    }
    for name, text in bad_cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(ValueError, match=name):
            ConfidenceModel.load(tmp_path / name)


def test_errors():
    result, id_to_label, correct, _ = synthetic(5, n_q=50)
    cm = ConfidenceModel()
    f = cm.features(result, id_to_label, distractor_penalty=np.zeros(50))
    with pytest.raises(RuntimeError, match="not fitted"):
        cm.predict_confidence(f)
    with pytest.raises(ValueError, match="both correct and wrong"):
        cm.fit(f, np.ones(50, bool))
    cm.fit(f, correct)
    with pytest.raises(ValueError, match="distractor_penalty"):
        cm.predict_confidence(cm.features(result, id_to_label))
    with pytest.raises(ValueError, match="inliers must have shape"):
        cm.features(result, id_to_label, inliers=np.zeros(3))
