from __future__ import annotations

import logging
import os
import sys

import numpy as np
import pytest

from retrieval_kit.index import SearchResult
from retrieval_kit.rerank import (
    LocalFeatureExtractor,
    SIFTExtractor,
    SpatialVerificationReranker,
    VerificationSettings,
    match_descriptors,
    verify_pair,
)
from retrieval_kit.rerank.local_feature_extractor import require_cv2

cv2 = pytest.importorskip("cv2")
skdata = pytest.importorskip("skimage.data")
PIL = pytest.importorskip("PIL.Image")


@pytest.fixture(scope="module")
def photos():
    left, right, _ = skdata.stereo_motorcycle()
    return {
        "left": left,
        "right": right,
        "coffee": skdata.coffee(),
        "chelsea": skdata.chelsea(),
        "astronaut": skdata.astronaut(),
    }


@pytest.fixture(scope="module")
def sift_features(photos):
    ex = SIFTExtractor()
    return {name: ex.extract(im) for name, im in photos.items()}


def _project(h, pts):
    q = np.c_[pts, np.ones(len(pts))] @ np.asarray(h).T
    return q[:, :2] / q[:, 2:]


@pytest.mark.parametrize("geometry", ["homography", "fundamental"])
def test_real_pair_verifies_and_unrelated_photos_do_not(sift_features, geometry):
    s = VerificationSettings(geometry=geometry)
    f = sift_features
    same = verify_pair(*f["left"], *f["right"], s)
    assert same.inliers >= 150, same  # measured: 223 (homography), 407 (fundamental)
    for other in ("coffee", "chelsea", "astronaut"):
        r = verify_pair(*f["left"], *f[other], s)
        assert r.inliers < 12, (other, r)  # measured: 0-8
        assert same.inliers > 10 * max(r.inliers, 1)


@pytest.mark.parametrize(
    "h",
    [
        [[0.9, 0.1, 20.0], [-0.08, 0.95, 10.0], [1e-4, -5e-5, 1.0]],  # perspective
        [[1.1, 0.0, -30.0], [0.0, 1.1, -20.0], [0.0, 0.0, 1.0]],  # zoom
        [[0.955, -0.296, 120.0], [0.296, 0.955, -60.0], [0.0, 0.0, 1.0]],  # rotation 0.3 rad
    ],
)
def test_synthetic_warp_recovers_the_known_homography(photos, h):
    h = np.array(h)
    img = photos["astronaut"]
    warped = cv2.warpPerspective(img, h, (img.shape[1], img.shape[0]))
    ex = SIFTExtractor()
    r = verify_pair(*ex.extract(img), *ex.extract(warped))
    assert r.inliers >= 300, r  # measured: ~600 of ~600 matches
    assert r.inliers >= 0.8 * r.matches
    grid = np.stack(np.meshgrid(np.linspace(96, 416, 5), np.linspace(96, 416, 5)), -1)
    grid = grid.reshape(-1, 2)
    err = np.abs(_project(r.model, grid) - _project(h, grid)).max()
    assert err < 1.0, err  # measured: 0.1-0.2 px


def test_keypoints_are_in_original_coordinates(photos):
    # a shrunk copy (max_side) must still give the homography of the full-size pixels
    img = photos["astronaut"]
    h = np.array([[1.0, 0.0, 15.0], [0.0, 1.0, -25.0], [0.0, 0.0, 1.0]])
    warped = cv2.warpPerspective(img, h, (img.shape[1], img.shape[0]))
    ex = SIFTExtractor(max_side=256)
    r = verify_pair(*ex.extract(img), *ex.extract(warped))
    grid = np.stack(np.meshgrid(np.linspace(96, 416, 5), np.linspace(96, 416, 5)), -1)
    err = np.abs(_project(r.model, grid.reshape(-1, 2)) - _project(h, grid.reshape(-1, 2)))
    assert err.max() < 2.0, err.max()


def match_by_hand(d1, d2, ratio, mutual):
    out = []
    for i in range(len(d1)):
        dist = np.sqrt(((d2 - d1[i]) ** 2).sum(1))
        order = np.argsort(dist, kind="stable")
        j = order[0]
        if ratio < 1.0 and not dist[j] < ratio * dist[order[1]]:
            continue
        if mutual and np.argmin(np.sqrt(((d1 - d2[j]) ** 2).sum(1))) != i:
            continue
        out.append([i, j])
    return np.array(out, np.int64).reshape(-1, 2)


@pytest.mark.parametrize("ratio", [1.0, 0.9, 0.7])
@pytest.mark.parametrize("mutual", [False, True])
def test_matching_matches_a_plain_loop(ratio, mutual):
    rng = np.random.default_rng(1)
    d1 = rng.standard_normal((40, 16)).astype(np.float32)
    d2 = np.concatenate(
        [d1[:25] + 0.3 * rng.standard_normal((25, 16)), rng.standard_normal((30, 16))]
    )
    got = match_descriptors(d1, d2.astype(np.float32), ratio=ratio, mutual=mutual)
    np.testing.assert_array_equal(got, match_by_hand(d1, d2, ratio, mutual))


class CountingSIFT(LocalFeatureExtractor):
    """A pluggable extractor that counts its calls."""

    def __init__(self, **kwargs):
        self.inner = SIFTExtractor(**kwargs)
        self.calls = 0

    def settings(self):
        return self.inner.settings()

    def extract(self, image):
        self.calls += 1
        return self.inner.extract(image)


@pytest.fixture()
def image_files(tmp_path, photos):
    paths = {}
    for name, im in photos.items():
        paths[name] = str(tmp_path / f"{name}.png")
        PIL.fromarray(im).save(paths[name])
    return paths


def test_reranker_moves_the_verified_neighbour_first(image_files):
    db = {0: image_files["coffee"], 1: image_files["chelsea"], 2: image_files["right"]}
    result = SearchResult(
        np.array([[0.9, 0.8, 0.7], [0.9, 0.8, 0.7]], np.float32),
        np.array([[0, 1, 2], [0, 1, -1]]),
    )
    sv = SpatialVerificationReranker(db, k=3, num_workers=2)
    queries = [image_files["left"], image_files["astronaut"]]
    inl = sv.inliers(queries, result)
    assert inl[0, 2] >= 150 and inl[0, :2].max() < 12 and inl[1, :2].max() < 12
    assert inl[1, 2] == -1  # missing neighbour: not verified
    new, new_inl = sv.rerank_with_inliers(queries, result)
    assert new.ids[0].tolist() == [2, 0, 1]
    np.testing.assert_allclose(new.scores[0], [0.7 + 1.0, 0.9, 0.8], rtol=1e-6)
    assert new_inl[0].tolist() == [inl[0, 2], inl[0, 0], inl[0, 1]]
    assert new.ids[1].tolist() == [0, 1, -1]
    # same answer by query id (a reranker chain passes embeddings as `queries`)
    sv_ids = SpatialVerificationReranker({**db, "q": image_files["left"]}, k=3)
    by_id = sv_ids.rerank(np.zeros((1, 4)), SearchResult(result.scores[:1], result.ids[:1]),
                          query_ids=["q"])  # fmt: skip
    assert by_id.ids.tolist() == [[2, 0, 1]]
    with pytest.raises(TypeError, match="query images"):
        sv.rerank(np.zeros((2, 4)), result)


def test_rescore_rule_by_hand():
    sv = SpatialVerificationReranker({}, extractor=CountingSIFT(), weight=0.5, inlier_cap=40,
                                     min_inliers=10)  # fmt: skip
    scores = np.array([[0.9, 0.85, 0.8, 0.7, 0.6]], np.float32)
    inl = np.array([[3, 9, 10, 80, -1]])
    new, new_inl = sv.rescore(SearchResult(scores, np.array([[1, 2, 3, 4, 5]])), inl)
    want = {1: 0.9, 2: 0.85, 3: 0.8 + 0.5 * 10 / 40, 4: 0.7 + 0.5, 5: 0.6}
    expected = sorted(want.items(), key=lambda kv: -kv[1])
    assert new.ids[0].tolist() == [i for i, _ in expected]
    np.testing.assert_allclose(new.scores[0], [s for _, s in expected], rtol=1e-6)
    inl_of = {1: 3, 2: 9, 3: 10, 4: 80, 5: -1}
    assert new_inl[0].tolist() == [inl_of[i] for i, _ in expected]
    assert new.ids[0].tolist() == [4, 3, 1, 2, 5]  # 10 inliers count (10 >= min), 9 do not


def test_cache_hit_does_not_recompute(image_files, tmp_path, caplog):
    db = {0: image_files["right"], 1: image_files["coffee"]}
    result = SearchResult(np.array([[0.9, 0.8]], np.float32), np.array([[1, 0]]))
    cache = tmp_path / "cache"
    ex = CountingSIFT()
    first = SpatialVerificationReranker(db, extractor=ex, cache_dir=cache).inliers(
        [image_files["left"]], result
    )
    assert ex.calls == 3
    assert len(list(cache.rglob("*.npz"))) == 3
    ex2 = CountingSIFT()
    again = SpatialVerificationReranker(db, extractor=ex2, cache_dir=cache).inliers(
        [image_files["left"]], result
    )
    assert ex2.calls == 0
    np.testing.assert_array_equal(first, again)
    # other settings: another key, recomputed
    ex3 = CountingSIFT(num_features=500)
    SpatialVerificationReranker(db, extractor=ex3, cache_dir=cache).inliers(
        [image_files["left"]], result
    )
    assert ex3.calls == 3
    # a changed file (new mtime) is recomputed, alone
    st = os.stat(image_files["coffee"])
    os.utime(image_files["coffee"], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    ex5 = CountingSIFT()
    SpatialVerificationReranker(db, extractor=ex5, cache_dir=cache).inliers(
        [image_files["left"]], result
    )
    assert ex5.calls == 1
    # a corrupt cache file is a logged miss
    for f in cache.rglob("*.npz"):
        f.write_bytes(b"not an npz")
    ex4 = CountingSIFT()
    with caplog.at_level(logging.WARNING):
        again = SpatialVerificationReranker(db, extractor=ex4, cache_dir=cache).inliers(
            [image_files["left"]], result
        )
    assert ex4.calls == 3
    assert "unreadable local-feature cache file" in caplog.text
    np.testing.assert_array_equal(first, again)


def test_unreadable_image(tmp_path, image_files):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"junk")
    db = {0: str(bad), 1: image_files["right"]}
    result = SearchResult(np.array([[0.9, 0.8]], np.float32), np.array([[0, 1]]))
    with pytest.raises(OSError, match="bad.jpg"):
        SpatialVerificationReranker(db).inliers([image_files["left"]], result)
    inl = SpatialVerificationReranker(db, on_error="skip").inliers([image_files["left"]], result)
    assert inl[0, 0] == 0 and inl[0, 1] >= 150
    with pytest.raises(KeyError, match="id 7"):
        SpatialVerificationReranker(db).inliers(
            [image_files["left"]], SearchResult(np.ones((1, 1), np.float32), np.array([[7]]))
        )


def test_missing_opencv_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "cv2", None)  # makes `import cv2` raise ImportError
    with pytest.raises(ImportError, match=r"retrieval_kit\[verify\]"):
        require_cv2()
    with pytest.raises(ImportError, match=r"retrieval_kit\[verify\]"):
        SIFTExtractor()


def test_settings_are_checked():
    with pytest.raises(ValueError, match="geometry"):
        VerificationSettings(geometry="affine")
    with pytest.raises(ValueError, match="ratio"):
        VerificationSettings(ratio=1.5)
