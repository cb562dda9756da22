"""Whitening: PCA whitening and cirtorch's learned whitening against hand numpy, safe save/load."""

from __future__ import annotations

import io
import json
import os
import pickle
import zipfile

import numpy as np
import pytest

from retrieval_kit.embed import Whitening, pairs_from_labels


def _data(n=400, d=6, seed=0):
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(d, d)) * np.linspace(3, 0.3, d)
    return rng.normal(size=(n, d)) @ mixing + rng.normal(size=d) * 5


def _project(w, x):
    return (x - w.mean_) @ w.projection_.T


def _same_up_to_sign(a, b, atol):
    signs = np.sign((a * b).sum(axis=0))
    np.testing.assert_allclose(a, b * signs, atol=atol)


def test_pca_whitening_gives_identity_covariance_and_matches_hand_pca():
    x = _data()
    w = Whitening().fit(x)
    y = _project(w, x)
    np.testing.assert_allclose(np.cov(y.T, bias=True), np.eye(6), atol=1e-8)
    # by hand, as cirtorch's pcawhitenlearn: eig of the covariance, largest first
    cov = np.cov(x.T, bias=True)
    val, vec = np.linalg.eig(cov)
    order = np.argsort(val)[::-1]
    p_ref = np.diag(val[order] ** -0.5) @ vec[:, order].T
    _same_up_to_sign(y, (x - x.mean(0)) @ p_ref.T, atol=1e-8)
    out = w.transform(x)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, y / np.linalg.norm(y, axis=1, keepdims=True), atol=1e-6)


def test_pca_dim_reduction_keeps_the_largest_variance_directions():
    x = _data()
    w = Whitening(dim=3).fit(x)
    y = _project(w, x)
    assert y.shape == (400, 3)
    np.testing.assert_allclose(np.cov(y.T, bias=True), np.eye(3), atol=1e-8)
    _, s, vt = np.linalg.svd(x - x.mean(0), full_matrices=False)
    ref = (x - x.mean(0)) @ vt[:3].T / (s[:3] / np.sqrt(len(x)))
    _same_up_to_sign(y, ref, atol=1e-8)


def test_shrinkage_is_the_convex_mix_with_a_scaled_identity():
    x = _data()
    w = Whitening(shrinkage=0.3).fit(x)
    cov = np.cov(x.T, bias=True)
    shrunk = 0.7 * cov + 0.3 * np.trace(cov) / 6 * np.eye(6)
    p = w.projection_
    np.testing.assert_allclose(p @ shrunk @ p.T, np.eye(6), atol=1e-8)
    assert not np.allclose(p @ cov @ p.T, np.eye(6), atol=1e-2)


@pytest.mark.parametrize("shrinkage", [0.0, 0.2])
def test_few_samples_many_dims_svd_path_equals_full_eigh(shrinkage):
    x = _data(n=12, d=30, seed=3)
    w = Whitening(dim=5, shrinkage=shrinkage).fit(x)  # N < D: the thin-SVD path
    cov = np.cov(x.T, bias=True)
    shrunk = (1 - shrinkage) * cov + shrinkage * np.trace(cov) / 30 * np.eye(30)
    val, vec = np.linalg.eigh(shrunk)
    p_ref = np.diag(val[::-1][:5] ** -0.5) @ vec[:, ::-1][:, :5].T
    _same_up_to_sign(_project(w, x), (x - x.mean(0)) @ p_ref.T, atol=1e-7)


def test_rank_deficient_pca_needs_dim_or_shrinkage():
    x = _data(n=4)
    with pytest.raises(ValueError, match="3 independent directions"):
        Whitening().fit(x)
    assert Whitening(dim=3).fit(x).projection_.shape == (3, 6)
    assert np.isfinite(Whitening(shrinkage=0.1).fit(x).transform(x)).all()


def test_learned_whitening_makes_pair_differences_identity():
    rng = np.random.default_rng(1)
    centres = _data(n=60, seed=2)
    labels = np.repeat(np.arange(60), 4)
    x = centres[labels] + rng.normal(size=(240, 6)) * np.linspace(0.1, 1.0, 6)
    pairs = pairs_from_labels(labels, len(x))
    assert len(pairs) == 60 * 4 * 3
    w = Whitening().fit(x, pairs=pairs)
    assert w.method == "learned"
    y = _project(w, x)
    d = y[pairs[:, 0]] - y[pairs[:, 1]]
    np.testing.assert_allclose(d.T @ d / len(d), np.eye(6), atol=1e-8)
    # then PCA of the projected data: its scatter is diagonal, largest first
    scatter = y.T @ y
    np.testing.assert_allclose(scatter, np.diag(np.diag(scatter)), atol=1e-6 * scatter.max())
    assert np.all(np.diff(np.diag(scatter)) <= 0)
    # by hand, as cirtorch's whitenlearn
    m = x[pairs[:, 0]].mean(0)
    df = (x[pairs[:, 0]] - x[pairs[:, 1]]).T
    p1 = np.linalg.inv(np.linalg.cholesky(df @ df.T / df.shape[1]))
    proj = p1 @ (x - m).T
    val, vec = np.linalg.eig(proj @ proj.T)
    p_ref = vec[:, np.argsort(val)[::-1]].T @ p1
    _same_up_to_sign(y, (x - m) @ p_ref.T, atol=1e-6)
    # labels= draws the same pairs
    w2 = Whitening(dim=2).fit(x, labels=labels)
    np.testing.assert_allclose(np.abs(w2.projection_), np.abs(w.projection_[:2]), atol=1e-8)


def test_pairs_from_labels_and_bad_pairs():
    assert pairs_from_labels([5, 6, 5, 5], 4).tolist() == [
        [0, 2],
        [0, 3],
        [2, 0],
        [2, 3],
        [3, 0],
        [3, 2],
    ]
    assert len(pairs_from_labels([1] * 10, 10, max_pairs=7)) == 7
    with pytest.raises(ValueError, match="no label occurs twice"):
        pairs_from_labels([1, 2, 3], 3)
    x = _data(n=10)
    with pytest.raises(ValueError, match="pairs row 1"):
        Whitening().fit(x, pairs=[[0, 1], [2, 10]])
    with pytest.raises(ValueError, match="row 3 is not finite"):
        Whitening().fit(np.where(np.arange(10)[:, None] == 3, np.nan, x))


def test_save_load_round_trip(tmp_path):
    x = _data()
    w = Whitening(dim=4, shrinkage=0.1).fit(x, labels=np.arange(400) // 5)
    path = tmp_path / "w.npz"
    w.save(path)
    assert os.listdir(tmp_path) == ["w.npz"]
    back = Whitening.load(path)
    assert (back.method, back.dim, back.shrinkage) == ("learned", 4, 0.1)
    np.testing.assert_array_equal(back.transform(x), w.transform(x))
    with pytest.raises(RuntimeError, match="not fitted"):
        Whitening().transform(x)
    with pytest.raises(ValueError, match="dimension 5"):
        w.transform(x[:, :5])


class _Boom:
    """Unpickling this creates the file ``marker``: proof that code from the file ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_crafted_files_are_refused_and_never_unpickled(tmp_path):
    x = _data()
    good = tmp_path / "good.npz"
    Whitening().fit(x).save(good)
    arrays = dict(np.load(good))

    def write(name, **content):
        buf = io.BytesIO()
        np.savez(buf, **content)
        (tmp_path / name).write_bytes(buf.getvalue())
        return tmp_path / name

    marker = tmp_path / "code-ran"
    evil = write("evil.npz", **{**arrays, "mean": np.array([_Boom(marker)], dtype=object)})
    with pytest.raises(ValueError, match="evil.npz"):
        Whitening.load(evil)
    assert not marker.exists()
    swapped = write("shape.npz", **{**arrays, "projection": arrays["projection"][:, :5]})
    with pytest.raises(ValueError, match="shape.npz: inconsistent"):
        Whitening.load(swapped)
    header = json.loads(arrays["header"].tobytes())
    other = np.frombuffer(json.dumps({**header, "format": "x"}).encode(), dtype=np.uint8)
    with pytest.raises(ValueError, match="format"):
        Whitening.load(write("fmt.npz", **{**arrays, "header": other}))
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(ValueError, match="junk.npz"):
        Whitening.load(tmp_path / "junk.npz")
    (tmp_path / "pickle.npz").write_bytes(pickle.dumps(_Boom(marker)))
    with pytest.raises(ValueError, match="pickle.npz"):
        Whitening.load(tmp_path / "pickle.npz")
    assert not marker.exists()
    with zipfile.ZipFile(good) as z:
        assert sorted(z.namelist()) == ["header.npy", "mean.npy", "projection.npy"]
