"""GradCache for any loss computed from the embeddings of a batch (SigLIP, FastCLIP's global loss, CLIP...)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sentence_transformers.base.losses import CachedLossMixin
from torch import Tensor, nn

from st_contrast.losses.batch_norm import warn_batch_norm_in_mini_batches
from st_contrast.losses.matryoshka import in_matryoshka, matryoshka_weight, refuse_per_sample_state

__all__ = ["GradCacheLoss"]


class GradCacheLoss(CachedLossMixin, nn.Module):
    def __init__(
        self,
        loss: nn.Module,
        mini_batch_size: int = 32,
        mini_batch_num_tokens: int | None = None,
        show_progress_bar: bool = False,
    ) -> None:
        """
        GradCache around a loss that has ``compute_loss_from_embeddings(embeddings, labels)``: the batch is embedded
        in mini-batches without gradients, ``loss`` runs once on the whole batch's embeddings and back-propagates to
        them (and to its own parameters: a learned temperature, SigLIP's bias), then every mini-batch is embedded
        again, with its RNG state replayed, and the cached gradients are pushed through it. It reuses Sentence
        Transformers' GradCache pass (``CachedLossMixin``), which also slices image inputs (``pixel_values``) by
        mini-batch, so both towers of an image-text model run in mini-batches: activation memory is that of one
        mini-batch, whatever the batch size, and loss and gradients equal the wrapped loss on the whole batch.

        The wrapped loss sees every embedding of the step at once, so its own per-step work (the loss's state
        updates of :class:`GlobalContrastiveLoss`, ``gather_across_devices``) happens exactly once per step, as
        without the cache. For :class:`InfoNCELoss` / :class:`CLIPLoss`, :class:`CachedInfoNCELoss` also chunks
        the logits.

        Args:
            loss: The loss to cache, e.g. :class:`SigLIPLoss`, :class:`GlobalContrastiveLoss` or :class:`CLIPLoss`.
            mini_batch_size: Rows per embedding mini-batch; bounds the memory.
            mini_batch_num_tokens: If set, text mini-batches are cut by token count instead.
            show_progress_bar: Show a progress bar over the mini-batches.

        References:
            - Scaling Deep Contrastive Learning Batch Size under Memory Limited Setup: https://arxiv.org/abs/2101.06983

        Requirements:
            1. A loss with ``compute_loss_from_embeddings``.
            2. A large ``per_device_train_batch_size`` and a small ``mini_batch_size``.

        Inputs:
            As the wrapped loss.

        Relations:
            - :class:`CachedInfoNCELoss` is the InfoNCE / CLIP counterpart that also chunks the loss.

        Example:
            ::

                from st_contrast.losses import GradCacheLoss, SigLIPLoss

                loss = GradCacheLoss(SigLIPLoss(model), mini_batch_size=32)  # batch 1024 in the memory of 32
        """
        super().__init__()
        if not callable(getattr(loss, "compute_loss_from_embeddings", None)):
            raise TypeError(
                f"GradCacheLoss needs a loss with compute_loss_from_embeddings; {type(loss).__name__} has none."
            )
        if mini_batch_size < 1:
            raise ValueError(f"mini_batch_size must be positive, got {mini_batch_size}.")
        self.loss = loss
        self.model = loss.model
        self.mini_batch_size = mini_batch_size
        self.mini_batch_num_tokens = mini_batch_num_tokens
        self.show_progress_bar = show_progress_bar

    @property
    def needs_sample_index(self) -> bool:
        """As the wrapped loss (stateful losses read sample indices as labels)."""
        return bool(getattr(self.loss, "needs_sample_index", False))

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor | None = None) -> Tensor:
        import torch

        if torch.is_grad_enabled():
            warn_batch_norm_in_mini_batches(self)
        return self.forward_cached(sentence_features, labels)

    def calculate_loss(self, reps: list[list[Tensor]], labels: Tensor | None = None, *, with_backward: bool = False):
        import torch

        if in_matryoshka(self, self.model) and (
            self.needs_sample_index or getattr(self.loss, "false_negative_detector", None) is not None
        ):
            refuse_per_sample_state(f"GradCacheLoss({type(self.loss).__name__})")
        loss = self.loss.compute_loss_from_embeddings([torch.cat(column) for column in reps], labels)
        if not with_backward:
            return loss
        # MatryoshkaLoss's decorator weights the embeddings' gradients; the loss's own parameters (a learned
        # temperature, SigLIP's bias) get this evaluation's weight here.
        weight = matryoshka_weight(self, reps)
        hooks = [] if weight == 1.0 else [p.register_hook(lambda g: g * weight) for p in self._own_parameters()]
        try:
            loss.backward()
        finally:
            for hook in hooks:
                hook.remove()
        return loss.detach()

    def _own_parameters(self) -> list[nn.Parameter]:
        """The trainable parameters of the wrapped loss outside the model it embeds with."""
        in_model = {id(parameter) for parameter in self.model.parameters()}
        return [p for p in self.loss.parameters() if p.requires_grad and id(p) not in in_model]

    def get_config_dict(self) -> dict[str, Any]:
        config = self.loss.get_config_dict() if callable(getattr(self.loss, "get_config_dict", None)) else {}
        return {"loss": type(self.loss).__name__, **config, "mini_batch_size": self.mini_batch_size}

    @property
    def citation(self) -> str:
        return """
@inproceedings{gao2021scaling,
    title={Scaling Deep Contrastive Learning Batch Size under Memory Limited Setup},
    author={Gao, Luyu and Zhang, Yunyi and Han, Jiawei and Callan, Jamie},
    booktitle={RepL4NLP},
    year={2021},
}
"""
