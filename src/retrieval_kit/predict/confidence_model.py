"""A learned, calibrated confidence: logistic regression on per-query features."""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from retrieval_kit._checks import positive_int
from retrieval_kit.io import atomic_write_json
from retrieval_kit.predict.confidence_features import ConfidenceFeatures, confidence_features

__all__ = ["ConfidenceModel"]

logger = logging.getLogger(__name__)

_FORMAT = "retrieval_kit.ConfidenceModel"
_VERSION = 1


class ConfidenceModel:
    """P(predicted label is right) from :func:`confidence_features`, by logistic regression.

    Fit it on the validation split's predictions (``correct`` = the predicted label is one of the
    query's labels; non-landmark queries are always wrong), then apply it to the test split: the
    probability replaces the hand-tuned confidence, which is what global average precision ranks.

    Features are standardised (training mean and standard deviation), and the weights minimise
    ``sum(log-loss) + l2 / 2 * ||w||^2`` (the intercept is not penalised),
    i.e. scikit-learn's ``LogisticRegression(C=1 / l2)`` on the standardised features. The fit is
    Newton's method in float64 numpy: deterministic, a few iterations, no extra dependency.

    Args:
        k: neighbours the features look at.
        method: how the label is predicted: ``"nn"`` or ``"vote"`` (see ``predict_labels``).
        l2: ridge strength on the standardised weights.
        max_iter: Newton iterations at most.
        tol: stop when the largest gradient component falls below it.

    Example:
        >>> cm = ConfidenceModel(k=10)  # doctest: +SKIP
        >>> val = cm.features(val_result, id_to_label, distractor_penalty=val_pen)  # doctest: +SKIP
        >>> correct = [lab in solution[q] for q, lab in zip(val_ids, val.labels)]  # doctest: +SKIP
        >>> cm.fit(val, correct).save("confidence.json")  # doctest: +SKIP
        >>> test = cm.features(test_result, id_to_label, distractor_penalty=pen)  # doctest: +SKIP
        >>> cm = ConfidenceModel.load("confidence.json")  # doctest: +SKIP
        >>> prob = cm.predict_confidence(test)  # doctest: +SKIP
    """

    def __init__(
        self,
        *,
        k: int = 10,
        method: str = "nn",
        l2: float = 1.0,
        max_iter: int = 100,
        tol: float = 1e-10,
    ) -> None:
        if method not in ("nn", "vote"):
            raise ValueError(f"method must be 'nn' or 'vote', got {method!r}")
        if not (isinstance(l2, (int, float)) and l2 > 0 and math.isfinite(l2)):
            raise ValueError(f"l2 must be a positive number, got {l2!r}")
        positive_int(k, "k")
        self.k = int(k)
        self.method = method
        self.l2 = float(l2)
        self.max_iter = int(max_iter)
        self.tol = float(tol)
        self.feature_names: tuple[str, ...] | None = None
        self.mean_: np.ndarray | None = None
        self.scale_: np.ndarray | None = None
        self.coef_: np.ndarray | None = None  # on the standardised features
        self.intercept_: float | None = None

    def features(self, result: Any, id_to_label: Any, **kwargs: Any) -> ConfidenceFeatures:
        """:func:`confidence_features` with this model's ``k`` and ``method``."""
        return confidence_features(result, id_to_label, k=self.k, method=self.method, **kwargs)

    def _matrix(self, features: ConfidenceFeatures) -> np.ndarray:
        if not isinstance(features, ConfidenceFeatures):
            raise TypeError(
                f"expected ConfidenceFeatures (from .features()), got {type(features).__name__}"
            )
        if self.feature_names is not None and tuple(features.names) != self.feature_names:
            raise ValueError(
                f"the model was fitted on features {list(self.feature_names)} but got "
                f"{list(features.names)}: pass the same inputs (distractor_penalty, inliers)"
            )
        return np.asarray(features.values, dtype=np.float64)

    def fit(self, features: ConfidenceFeatures, correct: Any) -> ConfidenceModel:
        """Fit on validation predictions; rows without a prediction (label ``None``) are skipped.

        Args:
            features: from :meth:`features`.
            correct: ``(Q,)`` bools, whether each predicted label is right.
        """
        self.feature_names = None
        x = self._matrix(features)
        y = np.asarray(correct)
        if y.shape != (x.shape[0],) or y.dtype.kind not in "bui":
            raise ValueError(f"correct must be {x.shape[0]} booleans, got shape {y.shape}")
        if not np.isin(y, (0, 1)).all():
            raise ValueError("correct must hold booleans (or 0/1)")
        keep = np.array([lab is not None for lab in features.labels], bool)
        x, y = x[keep], y[keep].astype(np.float64)
        if len(y) == 0 or y.min() == y.max():
            raise ValueError(
                "fitting a confidence needs both correct and wrong predictions; got "
                f"{int(y.sum())} correct of {len(y)}"
            )
        mean = x.mean(axis=0)
        scale = x.std(axis=0)
        scale[scale < 1e-12] = 1.0  # a constant feature gets weight ~0 from the ridge
        w, b = self._newton((x - mean) / scale, y)
        self.feature_names = tuple(features.names)
        self.mean_, self.scale_, self.coef_, self.intercept_ = mean, scale, w, b
        return self

    def _newton(self, z: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
        # Written out (no sklearn/scipy dependency): the problem is tiny and convex, and Newton
        # with step halving converges to machine precision in a handful of steps, deterministically.
        n, f = z.shape
        a = np.c_[z, np.ones(n)]
        reg = np.full(f + 1, self.l2)
        reg[-1] = 0.0
        theta = np.zeros(f + 1)
        theta[-1] = math.log(y.mean() / (1 - y.mean()))

        def objective(t: np.ndarray) -> float:
            m = a @ t
            return float(np.sum(np.logaddexp(0.0, m) - y * m) + 0.5 * np.sum(reg * t * t))

        obj = objective(theta)
        steps = 0
        for steps in range(1, self.max_iter + 1):  # noqa: B007 (reported below)
            p = 1.0 / (1.0 + np.exp(-(a @ theta)))
            grad = a.T @ (p - y) + reg * theta
            if np.abs(grad).max() < self.tol * max(1.0, n):
                break
            hess = (a * (p * (1 - p))[:, None]).T @ a + np.diag(reg + 1e-12)
            step = np.linalg.solve(hess, grad)
            t = 1.0
            while t > 1e-8:
                new = theta - t * step
                new_obj = objective(new)
                if new_obj <= obj:
                    break
                t *= 0.5
            else:
                break  # no decrease possible: at the optimum up to rounding
            theta, obj = new, new_obj
        else:
            logger.warning("ConfidenceModel.fit: no convergence in %d iterations", self.max_iter)
        logger.debug("ConfidenceModel.fit: %d Newton steps, objective %.6g", steps, obj)
        return theta[:-1].copy(), float(theta[-1])

    def decision_function(self, features: ConfidenceFeatures) -> np.ndarray:
        """``(Q,)`` log-odds of being correct."""
        if self.coef_ is None:
            raise RuntimeError("ConfidenceModel is not fitted: call fit() or load()")
        x = self._matrix(features)
        return (x - self.mean_) / self.scale_ @ self.coef_ + self.intercept_

    def predict_confidence(self, features: ConfidenceFeatures) -> np.ndarray:
        """``(Q,)`` float64 probabilities in [0, 1]; 0 for queries without a prediction."""
        m = self.decision_function(features)
        p = np.exp(-np.logaddexp(0.0, -m))  # sigmoid without overflow
        return np.where([lab is not None for lab in features.labels], p, 0.0)

    def to_dict(self) -> dict[str, Any]:
        """The fitted model as plain JSON-serialisable data."""
        if self.coef_ is None:
            raise RuntimeError("ConfidenceModel is not fitted: nothing to save")
        return {
            "format": _FORMAT,
            "version": _VERSION,
            "k": self.k,
            "method": self.method,
            "l2": self.l2,
            "feature_names": list(self.feature_names),
            "mean": self.mean_.tolist(),
            "scale": self.scale_.tolist(),
            "coef": self.coef_.tolist(),
            "intercept": self.intercept_,
        }

    def save(self, path: str | os.PathLike) -> None:
        """Write the model as JSON (atomic; floats round-trip exactly)."""
        atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> ConfidenceModel:
        """Read a model written by :meth:`save`; a malformed file is a ``ValueError`` naming it."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{path} is not a ConfidenceModel JSON file: {e}") from None
        try:
            return cls.from_dict(data)
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{path} is not a valid ConfidenceModel file: {e}") from None

    @classmethod
    def from_dict(cls, data: Any) -> ConfidenceModel:
        """Rebuild from :meth:`to_dict` output, checking every field."""
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            raise ValueError(f"missing 'format': {_FORMAT!r}")
        if data.get("version") != _VERSION:
            raise ValueError(f"unsupported version {data.get('version')!r} (expected {_VERSION})")
        names = data["feature_names"]
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names) or not names:
            raise ValueError("'feature_names' must be a non-empty list of strings")
        model = cls(k=data["k"], method=data["method"], l2=data["l2"])
        arrays = {}
        for key in ("mean", "scale", "coef"):
            v = data[key]
            if not isinstance(v, list) or len(v) != len(names):
                raise ValueError(f"'{key}' must be a list of {len(names)} numbers")
            if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
                raise ValueError(f"'{key}' must hold numbers only")
            arrays[key] = np.asarray(v, dtype=np.float64)
            if not np.isfinite(arrays[key]).all():
                raise ValueError(f"'{key}' holds a non-finite number")
        if (arrays["scale"] <= 0).any():
            raise ValueError("'scale' must be positive")
        b = data["intercept"]
        if not isinstance(b, (int, float)) or isinstance(b, bool) or not math.isfinite(b):
            raise ValueError("'intercept' must be a finite number")
        model.feature_names = tuple(names)
        model.mean_, model.scale_, model.coef_ = arrays["mean"], arrays["scale"], arrays["coef"]
        model.intercept_ = float(b)
        return model
