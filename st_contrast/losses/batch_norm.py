"""A warning for GradCache over BatchNorm layers in training mode (a ResNet image tower, say): each mini-batch is
then normalised by its own statistics, so the cached loss is not the whole batch's, and the running statistics move
in both of GradCache's passes."""

from __future__ import annotations

import logging

from torch import nn

__all__ = ["warn_batch_norm_in_mini_batches"]

logger = logging.getLogger(__name__)


def warn_batch_norm_in_mini_batches(loss: nn.Module) -> None:
    """Warn once per loss when ``loss.model`` holds BatchNorm layers in training mode while ``loss`` embeds in
    mini-batches of ``loss.mini_batch_size``: their output depends on which rows share a mini-batch (loss and
    gradients then differ from the uncached loss on the whole batch, and a mini-batch of one row fails), and their
    running statistics are updated by the embedding pass without gradients as well as by the one with them."""
    if getattr(loss, "_batch_norm_checked", False):
        return
    loss._batch_norm_checked = True
    layers = [
        name
        for name, module in loss.model.named_modules()
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.training
    ]
    if layers:
        logger.warning(
            "%s embeds in mini-batches of %d rows, but %d BatchNorm layer(s) of the model train (e.g. %s): each "
            "mini-batch is normalised by its own statistics, so the loss and its gradients are not the whole batch's, "
            "and the running statistics are updated twice a step. Use a tower without BatchNorm (ViT, ConvNeXt), "
            "lock the tower, or set mini_batch_size to the batch size.",
            type(loss).__name__, loss.mini_batch_size, len(layers), layers[0],
        )  # fmt: skip
