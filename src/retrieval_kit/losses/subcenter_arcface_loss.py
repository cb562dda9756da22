"""Sub-center ArcFace with per-class (dynamic) margins and optional partial-FC class sampling."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pytorch_metric_learning.distances import CosineSimilarity
from pytorch_metric_learning.losses import BaseMetricLossFunction
from pytorch_metric_learning.losses.mixins import WeightRegularizerMixin
from pytorch_metric_learning.utils import common_functions as c_f
from pytorch_metric_learning.utils import loss_and_miner_utils as lmu

from retrieval_kit._checks import non_negative_int, positive_int

__all__ = ["SubCenterArcFaceLoss"]


class SubCenterArcFaceLoss(WeightRegularizerMixin, BaseMetricLossFunction):
    """Sub-center ArcFace (Deng et al., ECCV 2020) with one margin per class if wanted.

    Each class has ``sub_centers`` weight vectors; a sample's cosine to a class is its largest
    cosine to that class's sub-centres. The target logit becomes ``cos(theta + m_y)`` (falling
    back to ``cos(theta) - m_y sin(m_y)`` past ``theta > pi - m_y`` so it keeps decreasing), every
    logit is multiplied by ``scale`` and the loss is the cross-entropy, as in PML's
    ``SubCenterArcFaceLoss``/``ArcFaceLoss``. ``sub_centers=1`` is plain ArcFace.

    Differences from PML's class (values equal to 1e-6 with a fixed margin, ``W`` in the same
    layout, so ``ours.W.data.copy_(pml.W.data)`` moves weights either way):

    - ``margin`` is in **radians** (the ArcFace paper's unit; PML takes degrees: its default
      28.6 degrees is 0.5 radians), and may be one value per class, e.g. from
      ``rk.losses.dynamic_margins`` (Ha et al. 2020);
    - the logits are computed in float32 with autocast turned off, so the loss is safe to call
      under bf16/fp16 autocast (PML casts ``W`` itself to the embeddings' dtype);
    - ``partial_fc < 1`` samples that fraction of the classes each call (every class present in
      the batch is kept; the others are drawn uniformly without replacement from the loss's own
      seeded generator, saved in its ``state_dict``), so the per-step cost of the head scales
      with the fraction (Partial FC, An et al., arXiv 2010.05222). ``W`` and its gradient stay
      full-size; only the sampled classes get a gradient in a step. Use 1.0 at evaluation.

    Non-landmark rows (``non_landmark_margin`` set): a row with a negative label shows none of
    the classes. It leaves the softmax (it has no target class) and adds
    ``softplus(scale * (max_c cos(x, c) - non_landmark_margin))``: a logistic "not a landmark"
    loss on its cosine to the nearest class (best sub-centre), which pushes that cosine below
    the margin. This is the quantity recognition thresholds (the top-1 cosine of a query), and
    the head keeps its shape; a reserved extra "non-landmark" class would instead gather
    rooms, faces and objects around one shared centre, which they need not have.

    Args:
        num_classes: number of classes (labels are ``0 .. num_classes - 1``).
        embedding_size: embedding dimension ``D``.
        sub_centers: weight vectors per class (``K``); 1 gives ArcFace.
        margin: additive angular margin in radians: a float, or ``num_classes`` values.
        scale: the logit scale ``s``.
        partial_fc: fraction of classes used per call, in (0, 1]; 1.0 uses them all.
        seed: seed of the partial-FC generator (default: drawn from torch's global RNG, so
            ``rk.train.seed_everything`` makes it reproducible).
        non_landmark_margin: ``None``: every label must be a class. A cosine in (-1, 1):
            negative labels mark non-landmark rows, trained to stay below this cosine to every
            class (e.g. rows labelled by ``rk.samplers.non_landmark_labels``).
        **kwargs: PML collaborators: ``weight_init_func`` (default normal, like PML),
            ``weight_regularizer``, ``weight_reg_weight``, ``reducer``, ``embedding_regularizer``,
            ``collect_stats``. The distance must be PML's ``CosineSimilarity`` (the default).

    Attributes:
        W: the (D, num_classes * K) weight; column ``c * K + k`` is sub-centre ``k`` of class
            ``c`` (PML's layout).
        margins: (num_classes,) float32 buffer of margins in radians.
        last_stats: after each call, ``accuracy`` (fraction of the batch whose best class,
            among those scored, is its label) and ``mean_angle`` (degrees to the target class).
        sampled_classes: after each call, the sorted class ids that were scored.

    Example:
        >>> import torch
        >>> loss_fn = SubCenterArcFaceLoss(10, 8, sub_centers=3, margin=0.3, scale=30)
        >>> emb, labels = torch.randn(6, 8), torch.tensor([0, 1, 2, 3, 4, 5])
        >>> loss = loss_fn(emb, labels)
        >>> loss.ndim, tuple(loss_fn.W.shape)
        (0, (8, 30))
    """

    def __init__(
        self,
        num_classes: int,
        embedding_size: int,
        *,
        sub_centers: int = 3,
        margin: float | Sequence[float] | np.ndarray | torch.Tensor = 0.5,
        scale: float = 64.0,
        partial_fc: float = 1.0,
        seed: int | None = None,
        non_landmark_margin: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        c_f.assert_distance_type(self, CosineSimilarity)
        self.num_classes = positive_int(num_classes, "num_classes")
        self.embedding_size = positive_int(embedding_size, "embedding_size")
        self.sub_centers = positive_int(sub_centers, "sub_centers")
        if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
            raise ValueError(f"scale must be a positive number, got {scale!r}")
        self.scale = float(scale)
        if not (isinstance(partial_fc, (int, float)) and 0 < partial_fc <= 1):
            raise ValueError(f"partial_fc must be a fraction in (0, 1], got {partial_fc!r}")
        self.partial_fc = float(partial_fc)
        if non_landmark_margin is not None and not (
            isinstance(non_landmark_margin, (int, float))
            and not isinstance(non_landmark_margin, bool)
            and -1.0 < non_landmark_margin < 1.0
        ):
            raise ValueError(
                f"non_landmark_margin must be None or a cosine in (-1, 1), got "
                f"{non_landmark_margin!r}"
            )
        self.non_landmark_margin = (
            None if non_landmark_margin is None else float(non_landmark_margin)
        )
        self.register_buffer("margins", self._margins(margin))
        self.W = torch.nn.Parameter(torch.empty(embedding_size, num_classes * sub_centers))
        self.weight_init_func(self.W)
        if seed is None:
            seed = int(torch.randint(0, 2**62, (1,)).item())
        self.generator = torch.Generator().manual_seed(non_negative_int(seed, "seed"))
        self.sampled_classes: torch.Tensor | None = None
        self.last_stats: dict[str, float] = {}
        self.add_to_recordable_attributes(
            list_of_names=["num_classes", "sub_centers", "scale"], is_stat=False
        )

    def _margins(self, margin: Any) -> torch.Tensor:
        values = torch.as_tensor(np.asarray(margin, dtype=np.float64), dtype=torch.float32)
        if values.ndim == 0:
            values = values.expand(self.num_classes).clone()
        if values.shape != (self.num_classes,):
            raise ValueError(
                f"margin must be a float or {self.num_classes} values (one per class), got "
                f"shape {tuple(values.shape)}"
            )
        bad = torch.nonzero(~((values >= 0) & (values < math.pi))).flatten()
        if len(bad):
            c = int(bad[0])
            raise ValueError(
                f"margin of class {c} is {values[c].item()!r}; margins are radians in [0, pi) "
                f"(PML's SubCenterArcFaceLoss takes degrees: 28.6 degrees = 0.5 radians)"
            )
        return values

    # Partial FC -----------------------------------------------------------------------------

    def sample_classes(self, labels: torch.Tensor) -> torch.Tensor:
        """Sorted class ids scored in this step: all of ``labels``' classes, plus others drawn
        uniformly without replacement until ``ceil(partial_fc * num_classes)`` (all classes when
        ``partial_fc == 1``). Advances the loss's generator.

        Example:
            >>> loss_fn = SubCenterArcFaceLoss(100, 4, partial_fc=0.1, seed=0)
            >>> ids = loss_fn.sample_classes(torch.tensor([3, 97]))
            >>> len(ids), 3 in ids, 97 in ids
            (10, True, True)
        """
        device = self.W.device
        if self.partial_fc >= 1.0:
            return torch.arange(self.num_classes, device=device)
        positive = torch.unique(labels.detach().cpu())
        wanted = max(math.ceil(self.partial_fc * self.num_classes), len(positive))
        is_positive = torch.zeros(self.num_classes, dtype=torch.bool)
        is_positive[positive] = True
        order = torch.randperm(self.num_classes, generator=self.generator)
        others = order[~is_positive[order]][: wanted - len(positive)]
        chosen, _ = torch.sort(torch.cat([positive, others]))
        return chosen.to(device)

    def get_extra_state(self) -> dict[str, Any]:
        # The sampling generator travels with the weights, so a resumed run draws the same
        # classes as an uninterrupted one.
        return {"generator": self.generator.get_state()}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])

    # The loss -------------------------------------------------------------------------------

    def _check_labels(self, labels: torch.Tensor) -> None:
        if labels.dtype.is_floating_point or labels.dtype == torch.bool:
            raise TypeError(f"labels must be integer class ids, got dtype {labels.dtype}")
        low = -math.inf if self.non_landmark_margin is not None else 0
        bad = labels[(labels < low) | (labels >= self.num_classes)] if len(labels) else labels
        if len(bad):
            raise ValueError(
                f"label {bad[0].item()} is out of range for num_classes={self.num_classes} "
                f"(labels must be 0 .. {self.num_classes - 1}; negative labels mark "
                f"non-landmarks only with non_landmark_margin set)"
            )

    def class_cosines(
        self, embeddings: torch.Tensor, classes: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, C) cosine of each embedding to each class (its best sub-centre), in float32.

        ``classes``: the class ids to score (default all), in the order of the columns.

        Example:
            >>> loss_fn = SubCenterArcFaceLoss(5, 4, sub_centers=2)
            >>> tuple(loss_fn.class_cosines(torch.randn(3, 4)).shape)
            (3, 5)
        """
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            weight = self.W.float()
            if classes is not None and len(classes) < self.num_classes:
                weight = weight.view(self.embedding_size, self.num_classes, self.sub_centers)
                weight = weight.index_select(1, classes).reshape(self.embedding_size, -1)
            cosine = self.distance(embeddings.float(), weight.t())
            cosine = cosine.view(len(embeddings), -1, self.sub_centers)
            return cosine.max(dim=2).values if self.sub_centers > 1 else cosine.squeeze(2)

    def compute_loss(
        self,
        embeddings: torch.Tensor,
        labels: torch.Tensor,
        indices_tuple: tuple[torch.Tensor, ...] | None,
        ref_emb: torch.Tensor | None,
        ref_labels: torch.Tensor | None,
    ) -> dict:
        """Per-sample losses for PML's reducer (see ``BaseMetricLossFunction``)."""
        c_f.labels_required(labels)
        c_f.ref_not_supported(embeddings, labels, ref_emb, ref_labels)
        if embeddings.shape[1] != self.embedding_size:
            raise ValueError(
                f"embeddings have {embeddings.shape[1]} dimensions, the loss expects "
                f"embedding_size={self.embedding_size}"
            )
        if self.W.device != embeddings.device:
            raise ValueError(
                f"the loss's weights are on {self.W.device} and the embeddings on "
                f"{embeddings.device}: move the loss first (loss_fn.to(device)), before building "
                f"the optimizer"
            )
        self._check_labels(labels)
        landmark = labels >= 0
        classes = self.sample_classes(labels[landmark])
        self.sampled_classes = classes
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            emb = embeddings.float()
            cosine = self.class_cosines(emb, classes)
            # Column of each label among the scored classes (classes is sorted); a
            # non-landmark row gets column 0 here and its own loss below.
            known = labels.clamp_min(0)
            partial = len(classes) < self.num_classes
            target = torch.searchsorted(classes, known) if partial else known
            rows = torch.arange(len(labels), device=emb.device)
            cos_t = cosine[rows, target]
            m = self.margins[known].to(cos_t.dtype)  # the buffer follows .to(dtype)
            sin_t = (1.0 - cos_t * cos_t).clamp_min(0.0).sqrt()
            # cos(theta + m) by the sum formula: acos has an infinite gradient at +-1.
            with_margin = torch.where(
                cos_t >= -torch.cos(m),  # theta <= pi - m
                cos_t * torch.cos(m) - sin_t * torch.sin(m),
                cos_t - m * torch.sin(m),
            )
            logits = cosine.scatter(1, target[:, None], with_margin[:, None]) * self.scale
            losses = F.cross_entropy(logits, target, reduction="none")
            if not bool(landmark.all()):
                top = cosine.max(dim=1).values
                away = F.softplus(self.scale * (top - self.non_landmark_margin))
                losses = torch.where(landmark, losses, away)
            weights = lmu.convert_to_weights(indices_tuple, labels, dtype=losses.dtype)
            self._record(cosine[landmark], target[landmark], cos_t[landmark])
        loss_dict = {
            "loss": {
                "losses": losses * weights,
                "indices": c_f.torch_arange_from_size(embeddings),
                "reduction_type": "element",
            }
        }
        self.add_weight_regularization_to_loss_dict(loss_dict, self.W.t())
        return loss_dict

    @torch.no_grad()
    def _record(self, cosine: torch.Tensor, target: torch.Tensor, cos_t: torch.Tensor) -> None:
        if len(target) == 0:  # a batch of non-landmarks only
            self.last_stats = {}
            return
        self.last_stats = {
            "accuracy": float((cosine.argmax(dim=1) == target).float().mean()),
            "mean_angle": float(torch.rad2deg(torch.acos(cos_t.clamp(-1, 1))).mean()),
        }

    def get_logits(self, embeddings: torch.Tensor) -> torch.Tensor:
        """(B, num_classes) scaled cosines without margin: the classifier's output.

        Example:
            >>> loss_fn = SubCenterArcFaceLoss(5, 4)
            >>> loss_fn.get_logits(torch.randn(2, 4)).argmax(dim=1).shape
            torch.Size([2])
        """
        return self.class_cosines(embeddings) * self.scale

    def get_default_distance(self) -> CosineSimilarity:
        return CosineSimilarity()

    def extra_repr(self) -> str:
        m = self.margins
        margin = f"{m[0].item():.4g}" if bool((m == m[0]).all()) else "per class"
        return (
            f"num_classes={self.num_classes}, embedding_size={self.embedding_size}, "
            f"sub_centers={self.sub_centers}, margin={margin}, scale={self.scale:g}, "
            f"partial_fc={self.partial_fc:g}"
            + (
                ""
                if self.non_landmark_margin is None
                else f", non_landmark_margin={self.non_landmark_margin:g}"
            )
        )
