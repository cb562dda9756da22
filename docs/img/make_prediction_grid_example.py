"""Make docs/img/prediction_grid_example.png from synthetic "landmarks" (run from the repo root).

    python docs/img/make_prediction_grid_example.py

Each landmark class is a shape in a colour on a sky-like background; the neighbours and scores
are made up so that the grid shows correct (green) and wrong (red) neighbours.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from retrieval_kit.viz import save_prediction_grid, select_predictions

CLASSES = {  # label -> (shape, colour)
    101: ("tower", (200, 80, 40)),
    202: ("dome", (60, 120, 200)),
    303: ("arch", (90, 160, 70)),
    404: ("tower", (140, 90, 170)),
}


def landmark(label: int, seed: int) -> Image.Image:
    """A 160x120 picture of landmark ``label``, jittered by ``seed``."""
    rng = np.random.default_rng(seed)
    shape, colour = CLASSES[label]
    img = Image.new("RGB", (160, 120), tuple(int(c) for c in rng.integers(170, 230, size=3)))
    draw = ImageDraw.Draw(img)
    draw.rectangle((0, 95, 160, 120), fill=(110, 100, 90))  # ground
    cx, s = 80 + int(rng.integers(-25, 25)), float(rng.uniform(0.8, 1.2))
    if shape == "tower":
        draw.rectangle((cx - 12 * s, 95 - 60 * s, cx + 12 * s, 95), fill=colour)
        draw.polygon([(cx - 16 * s, 95 - 60 * s), (cx + 16 * s, 95 - 60 * s), (cx, 95 - 78 * s)],
                     fill=colour)  # fmt: skip
    elif shape == "dome":
        draw.rectangle((cx - 35 * s, 95 - 30 * s, cx + 35 * s, 95), fill=colour)
        draw.pieslice((cx - 35 * s, 95 - 65 * s, cx + 35 * s, 95 + 5 * s), 180, 360, fill=colour)
    else:
        draw.rectangle((cx - 40 * s, 95 - 60 * s, cx + 40 * s, 95), fill=colour)
        draw.ellipse(
            (cx - 18 * s, 95 - 45 * s, cx + 18 * s, 95 + 25 * s), fill=img.getpixel((2, 2))
        )
    return img


# Six queries with their (made-up) top-4 neighbours: (label, score), nearest first.
truth = [101, 202, 303, 404, 202, 101]
ranked = [
    [(101, 0.93), (101, 0.90), (404, 0.71), (101, 0.69)],
    [(202, 0.88), (303, 0.62), (202, 0.60), (202, 0.55)],
    [(303, 0.52), (202, 0.50), (303, 0.47), (101, 0.40)],
    [(101, 0.81), (404, 0.79), (101, 0.64), (404, 0.61)],
    [(202, 0.97), (202, 0.95), (202, 0.91), (303, 0.70)],
    [(404, 0.58), (101, 0.57), (101, 0.50), (303, 0.33)],
]
labels_pred = [row[0][0] for row in ranked]
confidences = [row[0][1] for row in ranked]

# Rows to show: the two most confident correct, then the two most confident wrong predictions.
rows = list(select_predictions(labels_pred, confidences, truth, "most_confident_correct", n=2))
rows += list(select_predictions(labels_pred, confidences, truth, "most_confident_incorrect", n=2))

save_prediction_grid(
    "docs/img/prediction_grid_example.png",
    queries=[landmark(truth[q], seed=q) for q in rows],
    neighbours=[
        [(landmark(lab, seed=100 * q + j), lab, score) for j, (lab, score) in enumerate(ranked[q])]
        for q in rows
    ],
    true_labels=[truth[q] for q in rows],
    query_captions=[f"query {q}" for q in rows],
    title="Most confident correct (rows 1-2) and incorrect (rows 3-4) predictions",
    thumb_size=112,
)
