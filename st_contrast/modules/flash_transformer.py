"""``FlashTransformer``: Sentence Transformers' ``Transformer``, packed, that saves as a plain ``Transformer``."""

from __future__ import annotations

from abc import ABCMeta
from typing import Any

from sentence_transformers import SentenceTransformer
from sentence_transformers.base.modules import Transformer

from st_contrast.modules.packing import SUPPORTED_MODEL_TYPES, enable_packing, is_packed

__all__ = ["FlashTransformer", "SUPPORTED_MODEL_TYPES", "to_flash"]


class PackedModuleType(ABCMeta):
    """Metaclass of the packed module names: ``isinstance(module, FlashTransformer)`` asks "is it packed?".

    Calling such a class builds its base class (``packed_base``) and packs it (:func:`enable_packing`), so the
    object is a plain Sentence Transformers module whose saved ``modules.json`` names no st_contrast class.
    """

    packed_base: type[Transformer]

    def __instancecheck__(cls, instance: Any) -> bool:
        return isinstance(instance, cls.packed_base) and is_packed(instance)


class FlashTransformer(Transformer, metaclass=PackedModuleType):
    """Sentence Transformers' :class:`~sentence_transformers.base.modules.Transformer`, always packed.

    Every text batch is tokenized without padding and flattened to one run of ``total_tokens`` tokens with
    ``cu_seqlens`` and per-sequence ``position_ids`` (RoBERTa-family offsets included), so embeddings,
    projections and MLPs never compute on padding. Attention runs through a registered transformers attention
    function that confines each token to its own sequence, on one of these backends:

    - ``"varlen"``: PyTorch's built-in flash kernel ``torch.nn.attention.varlen.varlen_attn``
      (CUDA, fp16/bf16; no ``flash-attn`` compile needed).
    - ``"flash_attn"``: ``flash_attn_varlen_func`` from the ``flash-attn`` package.
    - ``"sdpa"``: exact masked SDPA over the regrouped sequences, on any device and dtype (``"cpu"``: former name).
    - ``"block_diagonal"``: exact too, with several sequences per regrouped row and a block-diagonal mask (far less
      attention work on short sentences beside a few long ones).
    - ``"auto"`` (default): ``flash_attn``, then ``varlen`` for fp16/bf16 CUDA tensors, else ``"block_diagonal"``
      (``"sdpa"`` while ``torch.compile`` traces); chosen per call, so one model runs on a laptop and on a GPU.

    ``FlashTransformer(...)`` returns a stock ``Transformer`` with packing switched on
    (:func:`~st_contrast.modules.enable_packing`); ``isinstance(module, FlashTransformer)`` tells whether a module
    runs packed. Packing is not saved: ``model.save(dir)`` writes a plain ``Transformer`` that
    ``SentenceTransformer(dir)`` loads (padded, stock attention, the same embeddings) without st_contrast, and
    :func:`st_contrast.load_model` loads it packed again. Models saved by st_contrast 0.1, whose ``modules.json``
    names this class, load through it.

    The token embeddings it outputs in training are packed (``[1, total_tokens, hidden]`` with ``cu_seq_lens_q`` in
    the features), which ST's ``Pooling`` reduces in every mode and ST's GradCache losses split by sequence. Inside
    ``model.encode`` they are handed on padded (:mod:`~st_contrast.modules.packed_outputs`), so
    ``encode(..., output_value="token_embeddings")`` returns each text's token embeddings as stock ST does.

    Args:
        model_name_or_path: Hugging Face model id or local directory, as for ``Transformer``.
        attention_backend: One of ``"auto"``, ``"varlen"``, ``"flash_attn"``, ``"sdpa"``, ``"block_diagonal"``.
        compile: ``torch.compile`` the packed model with dynamic shapes (one compile for every batch shape,
            :func:`~st_contrast.modules.compile_backbone`); a dict gives
            ``torch.compile`` arguments (``{"mode": "max-autotune"}``). Not saved.
        **kwargs: Every other ``Transformer`` argument (``model_kwargs``, ``processor_kwargs``,
            ``max_seq_length``, ...). ``unpad_inputs=False`` is refused: packing is the point.

    Example:
        ::

            from sentence_transformers import SentenceTransformer
            from sentence_transformers.sentence_transformer.modules import Pooling
            from st_contrast.modules import FlashTransformer

            backbone = FlashTransformer("sentence-transformers/all-MiniLM-L6-v2", max_seq_length=256)
            pooling = Pooling(backbone.get_embedding_dimension(), pooling_mode="mean")
            model = SentenceTransformer(modules=[backbone, pooling])
            embeddings = model.encode(["A short one.", "A somewhat longer sentence than the first."])
            model.save("output/minilm")  # SentenceTransformer("output/minilm") loads it, no st_contrast needed
    """

    packed_base = Transformer

    def __new__(
        cls,
        model_name_or_path: str,
        *,
        attention_backend: str = "auto",
        compile: bool | dict[str, Any] = False,
        **kwargs: Any,
    ) -> Transformer:
        if kwargs.get("unpad_inputs") is False:
            raise ValueError(
                f"{cls.__name__} always packs its inputs (unpad_inputs=False was given). Use "
                "sentence_transformers' Transformer module for a padded backbone."
            )
        # Packing is st_contrast's, not Sentence Transformers' flash_attn path: leave its setting unset, so a
        # saved model does not ask plain Sentence Transformers for unpadding it cannot do without flash_attn.
        kwargs.pop("unpad_inputs", None)
        return enable_packing(cls.packed_base(model_name_or_path, **kwargs), attention_backend, compile=compile)

    @classmethod
    def from_transformer(cls, module: Transformer, attention_backend: str = "auto") -> Transformer:
        """Pack a loaded ``Transformer`` in place (no copy, no disk round trip; works under torch.distributed)."""
        return enable_packing(module, attention_backend)


def to_flash(model: SentenceTransformer, attention_backend: str = "auto") -> SentenceTransformer:
    """Pack every Sentence Transformers ``Transformer`` module of ``model``, in place.

    Weights, tokenizer, ``max_seq_length``, processing settings, device and dtype are untouched, and so are the
    other modules (pooling, normalization, prompts), so ``model.encode`` gives the same embeddings without computing
    on padding; ``model.save`` still writes a plain model.

    Args:
        model: A loaded model, e.g. ``SentenceTransformer("sentence-transformers/all-MiniLM-L6-v2")``.
        attention_backend: The packed backend (``"auto"``, ``"varlen"``, ``"flash_attn"``, ``"sdpa"``,
            ``"block_diagonal"``).

    Returns:
        The same ``model`` object, for chaining.

    Example:
        ::

            from sentence_transformers import SentenceTransformer
            from st_contrast import to_flash

            model = to_flash(SentenceTransformer("sentence-transformers/all-MiniLM-L6-v2"))
    """
    modules = [module for module in model.modules() if isinstance(module, Transformer)]
    if not modules:
        found = ", ".join(type(module).__name__ for module in model.children())
        raise ValueError(f"to_flash found no sentence_transformers Transformer module to pack (modules: {found}).")
    for module in modules:
        enable_packing(module, attention_backend)
    return model
