"""``GlobalBatchNorm``: BatchNorm whose batch statistics span every rank's rows (any backend)."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = ["GlobalBatchNorm"]

# Exactly these types are converted: a subclass (timm's BatchNormAct2d) adds work to forward that
# a replacement would silently drop.
_CONVERTIBLE = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


class _SumOverRanks(torch.autograd.Function):
    """All-reduce (sum) whose backward all-reduces the gradient: every rank's rows get theirs.

    Hand-written: ``torch.distributed.nn.functional.all_reduce`` does the same but is deprecated
    (a warning per call); ``dist.all_reduce`` itself works on every backend, gloo included.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        x = x.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad)
        return grad


class GlobalBatchNorm(_BatchNorm):
    """BatchNorm over the global batch of a data-parallel job: the statistics of all ranks' rows.

    In training mode under an initialised process group of more than one rank, the mean and
    variance are those of every rank's rows together (counts may differ between ranks), and the
    running statistics move as one process's would on the whole batch (unbiased variance over the
    global count), identically on every rank. The collectives are differentiable, so under DDP a
    step on ``world_size`` shares of a batch is the one-process step on the whole batch. Elsewhere
    (evaluation mode, one process) it is ``torch.nn.BatchNorm{1,2,3}d``.

    Hand-written because ``torch.nn.SyncBatchNorm`` is CUDA-only (it refuses CPU tensors and
    gloo). The parameters and buffers are BatchNorm's, under the same names, so a state dict
    loads into the plain model and back. Every rank must call ``forward`` the same number of
    times in training mode (each call runs two all-reduces).

    Example:
        >>> model = GlobalBatchNorm.convert(torch.nn.Sequential(torch.nn.BatchNorm1d(4)))
        >>> model(torch.randn(8, 4)).shape  # one process: BatchNorm1d's result
        torch.Size([8, 4])
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected an input of shape (N, C, ...), got {tuple(input.shape)}")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(input)
        world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        use_batch_stats = self.training or not self.track_running_stats
        if world == 1 or not use_batch_stats:
            return super().forward(input)
        return self._global_forward(input)

    def _global_forward(self, x: torch.Tensor) -> torch.Tensor:
        dims = [0, *range(2, x.dim())]
        shape = (1, -1) + (1,) * (x.dim() - 2)
        xf = x.float()
        count = x.numel() // max(x.shape[1], 1)
        # One all-reduce for the sums and the row count, a second for the squared deviations
        # from the global mean (two passes: as exact as one process's BatchNorm).
        total = _SumOverRanks.apply(torch.cat([xf.sum(dims), xf.new_tensor([count])]))
        n = total[-1].detach()
        if n <= 1:
            raise ValueError(
                f"GlobalBatchNorm needs more than 1 value per channel when training, got {int(n)} "
                "over all ranks"
            )
        mean = total[:-1] / n
        centred = xf - mean.view(shape)
        var = _SumOverRanks.apply((centred * centred).sum(dims)) / n
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.weight is not None:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.training and self.track_running_stats:
            self._update_running_stats(mean.detach(), var.detach() * (n / (n - 1)))
        return y.to(x.dtype)

    @torch.no_grad()
    def _update_running_stats(self, mean: torch.Tensor, unbiased_var: torch.Tensor) -> None:
        # BatchNorm's rule: momentum, or a cumulative average when momentum is None.
        self.num_batches_tracked.add_(1)
        momentum = self.momentum
        factor = 1.0 / float(self.num_batches_tracked) if momentum is None else momentum
        self.running_mean.mul_(1 - factor).add_(mean.to(self.running_mean.dtype), alpha=factor)
        self.running_var.mul_(1 - factor).add_(
            unbiased_var.to(self.running_var.dtype), alpha=factor
        )

    @classmethod
    def convert(cls, module: nn.Module) -> nn.Module:
        """``module`` with every ``BatchNorm1d/2d/3d`` replaced by a ``GlobalBatchNorm``.

        The replacement shares the original's parameters and buffers (an optimizer built before
        still holds the right tensors) and its training mode; subclasses of BatchNorm are left as
        they are. Returns ``module`` itself (changed in place) unless it is a BatchNorm.

        Example:
            >>> head = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.BatchNorm1d(4))
            >>> type(GlobalBatchNorm.convert(head)[1]).__name__
            'GlobalBatchNorm'
        """
        if type(module) in _CONVERTIBLE:
            new = cls(
                module.num_features,
                eps=module.eps,
                momentum=module.momentum,
                affine=module.affine,
                track_running_stats=module.track_running_stats,
            )
            for name, param in module.named_parameters(recurse=False):
                setattr(new, name, param)
            for name, buf in module.named_buffers(recurse=False):
                new.register_buffer(name, buf)
            new.train(module.training)
            return new
        for name, child in module.named_children():
            new_child = cls.convert(child)
            if new_child is not child:
                module.add_module(name, new_child)
        return module
