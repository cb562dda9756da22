"""Pictures of predictions: query/neighbour grids framed by correctness, and row pickers.

Example:
    >>> from retrieval_kit.viz import select_predictions
    >>> select_predictions([1, 2], [0.9, 0.1], [1, 3], "most_confident_incorrect").tolist()
    [1]
"""

from __future__ import annotations

from retrieval_kit.viz.prediction_grid import (
    CORRECT_COLOR,
    INCORRECT_COLOR,
    QUERY_COLOR,
    UNKNOWN_COLOR,
    render_prediction_grid,
    save_prediction_grid,
)
from retrieval_kit.viz.selection import SELECTION_KINDS, is_correct, select_predictions

__all__ = [
    "CORRECT_COLOR",
    "INCORRECT_COLOR",
    "QUERY_COLOR",
    "SELECTION_KINDS",
    "UNKNOWN_COLOR",
    "is_correct",
    "render_prediction_grid",
    "save_prediction_grid",
    "select_predictions",
]
