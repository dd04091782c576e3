"""The training state a loss keeps outside the model (GloFND thresholds, SogCLR/FastCLIP moving averages).

Sentence Transformers checkpoints the model, the optimizer and the RNG, but not the buffers and parameters a
loss owns itself, so a resumed run would restart per-sample state from its initial values. These helpers
collect exactly that state (everything in the loss's module tree except the model it embeds with) and put it
back.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch
from sentence_transformers.base.model import BaseModel
from torch import Tensor, nn

from st_contrast.compat import is_persistent_buffer

__all__ = ["LOSS_STATE_NAME", "load_loss_state", "loss_state_dict", "save_loss_state"]

LOSS_STATE_NAME = "loss_state.pt"


def _own_tensors(module: nn.Module, prefix: str = "") -> Iterator[tuple[str, Tensor]]:
    """Parameters and persistent buffers of ``module``'s tree, skipping embedded models (saved with the model)."""
    if isinstance(module, BaseModel):
        return
    for name, parameter in module.named_parameters(recurse=False):
        yield prefix + name, parameter
    for name, buffer in module.named_buffers(recurse=False):
        if is_persistent_buffer(module, name):
            yield prefix + name, buffer
    for child_name, child in module.named_children():
        yield from _own_tensors(child, f"{prefix}{child_name}.")


def _as_module(loss: nn.Module | dict[str, nn.Module]) -> nn.Module:
    return nn.ModuleDict(loss) if isinstance(loss, dict) else loss


def loss_state_dict(loss: nn.Module | dict[str, nn.Module]) -> dict[str, Tensor]:
    """The loss's own state (a dict of losses, as in multi-dataset training, gives ``name.``-prefixed keys)."""
    return {name: tensor.detach().cpu().clone() for name, tensor in _own_tensors(_as_module(loss))}


@torch.no_grad()
def load_loss_state(loss: nn.Module | dict[str, nn.Module], state: dict[str, Tensor]) -> None:
    """Copy ``state`` (from :func:`loss_state_dict`) into ``loss``; keys or shapes that differ raise an error."""
    own = dict(_own_tensors(_as_module(loss)))
    if missing_or_extra := set(own) ^ set(state):
        raise ValueError(
            "The checkpoint's loss state does not match this loss (keys only in one of them: "
            f"{sorted(missing_or_extra)}). Resume with the loss configuration the checkpoint was written with."
        )
    for name, tensor in own.items():
        if tensor.shape != state[name].shape:
            raise ValueError(
                f"Loss state {name!r} has shape {tuple(state[name].shape)} in the checkpoint but "
                f"{tuple(tensor.shape)} here: was the training dataset (num_samples) changed?"
            )
        tensor.copy_(state[name].to(tensor.device))


def save_loss_state(loss: nn.Module | dict[str, nn.Module], directory: str | Path) -> Path | None:
    """Write the loss's own state to ``directory/loss_state.pt``; nothing is written for a stateless loss."""
    state = loss_state_dict(loss)
    if not state:
        return None
    path = Path(directory) / LOSS_STATE_NAME
    torch.save(state, path)
    return path
