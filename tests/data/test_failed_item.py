"""FailedItem: one (row, path, reason) 3-tuple for every skipped image, the exception kept apart."""

from __future__ import annotations

import pickle

from retrieval_kit.data import FailedItem, ImageLoadError


def test_is_a_three_tuple_that_unpacks_like_the_documented_result():
    item = FailedItem(4, "a.jpg", "not an image", OSError("x"))
    row, path, reason = item
    assert (row, path, reason) == (4, "a.jpg", "not an image") and item == (
        4,
        "a.jpg",
        "not an image",
    )
    assert len(item) == 3 and isinstance(item.error, OSError)


def test_error_survives_pickling_and_replace_but_not_without_error():
    item = FailedItem.from_exception(2, "b.jpg", OSError("unreadable"))
    back = pickle.loads(pickle.dumps(item))
    assert back == item and type(back.error) is OSError and str(back.error) == "unreadable"
    moved = back._replace(row=7)
    assert moved.row == 7 and moved.error is back.error
    assert item.without_error().error is None


def test_reason_prefers_the_loaders_own_reason():
    exc = ImageLoadError("c.jpg", "empty file (0 bytes)")
    assert FailedItem.from_exception(0, "c.jpg", exc).reason == "empty file (0 bytes)"
