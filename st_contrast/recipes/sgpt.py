"""Ready-made SGPT training set-ups (Muennighoff, 2022, arXiv:2202.08904) built from ST modules."""

from __future__ import annotations

from typing import Any

import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.base.modules import Dense, Router, Transformer
from sentence_transformers.sentence_transformer.modules import Pooling

from st_contrast.adapters.bitfit import apply_bitfit
from st_contrast.modules.embedding_tokenizer import pad_with_eos
from st_contrast.modules.packing import enable_packing

__all__ = ["asymmetric_model", "linear_stack", "sgpt_bitfit_model"]


def linear_stack(dimension: int, num_layers: int, *, before_pooling: bool = False) -> list[Dense]:
    """SGPT's ``--addxlinear``: ``num_layers`` square linear layers, initialised to the identity.

    Identity weights and zero biases make the stack a no-op at the start, so training begins
    from the backbone's own embeddings. Before pooling the layers map every token embedding,
    after pooling the sentence embedding.

    Args:
        dimension: Embedding size (``backbone.get_embedding_dimension()``).
        num_layers: Number of ``Dense`` layers (``>= 1``).
        before_pooling: Apply to ``token_embeddings`` (before ``Pooling``) instead of ``sentence_embedding``.

    Returns:
        ``Dense`` modules to place in ``SentenceTransformer(modules=[...])``.

    Example:
        ::

            from st_contrast.recipes import linear_stack

            modules = [backbone, *linear_stack(384, 2, before_pooling=True), Pooling(384, "mean")]
    """
    if num_layers < 1:
        raise ValueError(f"num_layers must be at least 1, got {num_layers}; leave the stack out for none.")
    name = "token_embeddings" if before_pooling else "sentence_embedding"
    return [
        Dense(
            dimension,
            dimension,
            activation_function=None,
            init_weight=torch.eye(dimension),
            init_bias=torch.zeros(dimension),
            module_input_name=name,
        )
        for _ in range(num_layers)
    ]


def sgpt_bitfit_model(
    model_name_or_path: str,
    *,
    packed: bool = False,
    attention_backend: str = "auto",
    pooling_mode: str = "weightedmean",
    linear_before: int = 0,
    linear_after: int = 0,
    device: str | None = None,
    **backbone_kwargs: Any,
) -> SentenceTransformer:
    """SGPT-BE: a decoder with position-weighted mean pooling, trained with BitFit.

    Weighted mean pooling weighs later tokens more, since in a causal decoder they have seen more
    of the text. Biases and the optional linear stacks train; all other weights are frozen
    (see :func:`apply_bitfit`). With ``weightedmean`` the tokenizer pads on the right: the weights
    then count from each text's first token on every sentence-transformers release (before 6.2,
    ST's padded pooling counted them from the padded row's start, which left padding shifts).

    Args:
        model_name_or_path: Decoder id or path (needs bias terms, e.g. GPT-Neo or Qwen2).
        packed: Run the backbone packed (:func:`~st_contrast.modules.enable_packing`) for supported architectures.
        attention_backend: The packed attention backend (``"auto"``, ``"varlen"``, ``"flash_attn"``, ``"sdpa"``,
            ``"block_diagonal"``).
        pooling_mode: ST ``Pooling`` mode.
        linear_before: Number of identity-initialised linear layers on the token embeddings.
        linear_after: Number of identity-initialised linear layers on the sentence embedding.
        device: Passed to ``SentenceTransformer``.
        **backbone_kwargs: Passed to the ``Transformer`` (``max_seq_length``, ``model_kwargs``...).

    Returns:
        The ``SentenceTransformer``, ready for ``SentenceTransformerTrainer``.

    Example:
        ::

            from st_contrast.adapters import count_parameters
            from st_contrast.recipes import sgpt_bitfit_model

            model = sgpt_bitfit_model("EleutherAI/gpt-neo-125m", linear_after=1)
            print(count_parameters(model))
    """
    backbone = _backbone(model_name_or_path, packed, attention_backend, backbone_kwargs)
    modes = (pooling_mode,) if isinstance(pooling_mode, str) else tuple(pooling_mode)
    if "weightedmean" in modes:
        # sentence-transformers < 6.2 counts the weights from a padded row's start: left padding would shift them.
        backbone.tokenizer.padding_side = "right"
    dimension = backbone.get_embedding_dimension()
    modules = [backbone]
    if linear_before:
        modules += linear_stack(dimension, linear_before, before_pooling=True)
    modules.append(Pooling(dimension, pooling_mode=pooling_mode))
    if linear_after:
        modules += linear_stack(dimension, linear_after)
    model = SentenceTransformer(modules=modules, device=device)
    apply_bitfit(model, train_heads=True)
    return model


def asymmetric_model(
    model_name_or_path: str,
    *,
    document_model_name_or_path: str | None = None,
    packed: bool = False,
    attention_backend: str = "auto",
    pooling_mode: str = "mean",
    device: str | None = None,
    **backbone_kwargs: Any,
) -> SentenceTransformer:
    """SGPT's asymmetric bi-encoder: separate query and document towers behind an ST ``Router``.

    Both towers start from the same weights (or ``document_model_name_or_path``) and train apart.
    ``model.encode_query`` and ``model.encode_document`` pick the tower; plain ``encode`` uses the
    document tower. Train with ``SentenceTransformerTrainer`` and ``router_mapping`` naming which
    dataset columns are queries (``{"anchor": "query", "positive": "document", ...}``).

    Args:
        model_name_or_path: Backbone of the query tower (and of the document tower by default).
        document_model_name_or_path: A different backbone for the document tower.
        packed: Run both towers packed (:func:`~st_contrast.modules.enable_packing`).
        attention_backend: The packed attention backend.
        pooling_mode: ST ``Pooling`` mode of both towers.
        device: Passed to ``SentenceTransformer``.
        **backbone_kwargs: Passed to both ``Transformer`` instances.

    Returns:
        The ``SentenceTransformer`` with a query/document ``Router``.

    Example:
        ::

            from st_contrast.adapters import lock
            from st_contrast.recipes import asymmetric_model

            model = asymmetric_model("sentence-transformers/all-MiniLM-L6-v2")
            lock(model[0].sub_modules["document"])  # optional: train the query tower only
    """
    towers = []
    for path in (model_name_or_path, document_model_name_or_path or model_name_or_path):
        backbone = _backbone(path, packed, attention_backend, backbone_kwargs)
        towers.append([backbone, Pooling(backbone.get_embedding_dimension(), pooling_mode=pooling_mode)])
    router = Router.for_query_document(query_modules=towers[0], document_modules=towers[1])
    return SentenceTransformer(modules=[router], device=device)


def _backbone(path: str, packed: bool, attention_backend: str, kwargs: dict[str, Any]) -> Transformer:
    backbone = Transformer(path, **kwargs)
    pad_with_eos(backbone.tokenizer)  # GPT-Neo / GPT-J, SGPT's models, have no pad token
    return enable_packing(backbone, attention_backend) if packed else backbone
