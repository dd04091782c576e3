"""Decoder LLMs as bidirectional text encoders (LLM2Vec), for every attention implementation."""

from __future__ import annotations

import logging
from typing import Any

import transformers
from packaging import version
from sentence_transformers.base.modules import Transformer
from torch import nn

from st_contrast.compat import flatten_position_offset, should_flatten_inputs
from st_contrast.modules.architectures import bidirectional_refusal, model_type_of
from st_contrast.modules.backbones import backbone_models
from st_contrast.modules.embedding_tokenizer import EmbeddingTokenizer, collate_ids
from st_contrast.modules.flash_transformer import PackedModuleType
from st_contrast.modules.leak_probe import BidirectionalityError, check_bidirectional
from st_contrast.modules.packing import enable_packing

__all__ = ["BidirectionalFlashTransformer", "BidirectionalTransformer", "is_bidirectional", "set_causal"]

logger = logging.getLogger(__name__)

_MIN_TRANSFORMERS = "5.2.0"


def set_causal(model: nn.Module, causal: bool) -> nn.Module:
    """Make every transformers backbone in ``model`` causal or bidirectional, in place.

    Two things decide whether a decoder attends to later tokens, and both are set:

    - ``config.is_causal``: from transformers 5.2 the mask builders (``create_causal_mask`` and its
      sliding-window variant) build a bidirectional padding mask when it is False, and the models'
      ``merge_with_config_defaults`` forwards it to every attention call as the ``is_causal``
      kwarg, which ``sdpa``, ``flash_attention_2`` and st_contrast's packed kernels read first. It is
      written to ``config.json`` on save, so a stock ``AutoModel`` / ``Transformer`` reload of the
      backbone is bidirectional too.
    - each attention module's ``is_causal`` attribute, which kernels read when no kwarg is given
      (calls that bypass the model's forward).

    Making a model bidirectional is then checked on every backbone with a leak probe
    (:func:`~st_contrast.modules.leak_probe.check_bidirectional`: two short token sequences, no gradients): a
    backbone that stays causal or attends across sequences is refused with an error naming its architecture, and the
    model gets its previous settings back. Architectures known not to follow ``config.is_causal`` (GPT-Neo, see
    :data:`~st_contrast.modules.architectures.ARCHITECTURES`) are refused before anything changes.

    Args:
        model: A ``SentenceTransformer``, one of its modules, a transformers model, or a peft-wrapped one.
        causal: ``False`` for bidirectional attention, ``True`` to restore causal attention.

    Returns:
        ``model``.

    Raises:
        BidirectionalityError: ``causal=False`` on an architecture that cannot be made bidirectional.

    Example:
        ::

            from sentence_transformers.base.modules import Transformer
            from st_contrast.modules import set_causal

            backbone = set_causal(Transformer("Qwen/Qwen3-0.6B"), False)  # bidirectional, saved as is_causal: false
    """
    if version.parse(transformers.__version__) < version.parse(_MIN_TRANSFORMERS):
        raise RuntimeError(
            f"Bidirectional decoders need transformers >= {_MIN_TRANSFORMERS} (config.is_causal drives the "
            f"attention masks there); found {transformers.__version__}. Upgrade with "
            f'`pip install -U "transformers>={_MIN_TRANSFORMERS}"`.'
        )
    backbones = backbone_models(model)
    if not causal:
        for backbone in backbones:
            model_type = model_type_of(backbone.config)
            if reason := bidirectional_refusal(model_type):
                raise BidirectionalityError(
                    f"{type(backbone).__name__} (model_type {model_type!r}) cannot be made bidirectional: {reason}."
                )
    previous = [value for backbone in backbones for value in _set_backbone_causal(backbone, causal)]
    if not causal:
        try:
            for backbone in backbones:
                check_bidirectional(backbone)
        except Exception:  # refused, or the probe could not run: never leave the model half changed
            _restore(previous)
            raise
    return model


_MISSING = object()


def _set_backbone_causal(backbone: transformers.PreTrainedModel, causal: bool) -> list[tuple[object, object]]:
    """Set ``is_causal`` on the backbone's configs and attention modules; returns the previous values."""
    configs = {id(backbone.config): backbone.config}
    text_config = backbone.config.get_text_config()
    configs.setdefault(id(text_config), text_config)
    targets = list(configs.values()) + [
        module
        for module in backbone.modules()
        if isinstance(getattr(module, "is_causal", None), bool) and not isinstance(module, transformers.PreTrainedModel)
    ]
    previous = [(target, target.__dict__.get("is_causal", _MISSING)) for target in targets]
    for target in targets:
        target.is_causal = causal
    return previous


def _restore(previous: list[tuple[object, object]]) -> None:
    for target, value in previous:
        if value is _MISSING:
            target.__dict__.pop("is_causal", None)
        else:
            target.is_causal = value


def is_bidirectional(model: nn.Module) -> bool:
    """Whether every backbone of ``model`` has ``config.is_causal == False`` and no causal attention module (and its
    architecture is not one that ignores those settings)."""
    for backbone in backbone_models(model):
        if bidirectional_refusal(model_type_of(backbone.config)):
            return False
        if getattr(backbone.config, "is_causal", True):
            return False
        if any(getattr(module, "is_causal", False) is True for module in backbone.modules()):
            return False
    return True


class BidirectionalTransformer(Transformer):
    """Sentence Transformers' ``Transformer`` with a decoder LLM made bidirectional (LLM2Vec, step 1).

    Every attention implementation is bidirectional (``eager``, ``sdpa``, ``flash_attention_2``, and the packed
    kernels after :func:`~st_contrast.modules.enable_packing`); see :func:`set_causal` for the mechanism.
    Texts are tokenized for embedding:

    - ``append_eos``: an EOS token after truncation, so last-token pooling always sees it (a
      tokenizer that adds EOS itself gets no second one).
    - a ``prompt`` (instruction) is tokenized together with each text; the tokens before the first
      one that holds a text character are marked in ``instruction_mask``, which
      :class:`~st_contrast.modules.InstructionPooling` leaves out of the embedding.
    - ``sgpt_brackets``: SGPT's bracket tokens around the text, ``[ ]`` for queries and ``{ }``
      for documents (``encode_query`` / ``encode_document``, or the trainer's task), inserted as
      token ids so they never merge with the text.

    The settings are saved in ``sentence_bert_config.json`` and ``is_causal: false`` in the
    backbone's ``config.json``; :func:`st_contrast.load_model` restores both. This tokenization is not a stock
    Sentence Transformers setting, so ``modules.json`` names this class; :func:`st_contrast.export_model`
    writes the plain form (a stock ``Transformer``, EOS added by the saved tokenizer) where it is expressible.

    Args:
        model_name_or_path: A decoder (Llama, Mistral, Qwen2/3, Gemma, ...) id or path.
        bidirectional: ``False`` keeps causal attention (SGPT-style causal embedders with EOS/brackets).
        append_eos: Append the tokenizer's EOS after truncation. A tokenizer without one is refused.
        sgpt_brackets: Wrap queries in ``[ ]`` and documents in ``{ }`` (SGPT asymmetric search).
        **kwargs: Every ``Transformer`` argument (``model_kwargs={"attn_implementation": "sdpa"}``,
            ``max_seq_length``, ...).

    Example:
        ::

            from sentence_transformers import SentenceTransformer
            from st_contrast.modules import BidirectionalTransformer, InstructionPooling

            backbone = BidirectionalTransformer("meta-llama/Llama-3.2-1B", max_seq_length=512)
            model = SentenceTransformer(modules=[backbone, InstructionPooling(backbone.get_embedding_dimension())])
            model.encode(["A man plays a guitar."], prompt="Retrieve semantically similar text: ")

    Reference: BehnamGhader et al., 2024, "LLM2Vec: Large Language Models Are Secretly Powerful Text
    Encoders", arXiv:2404.05961; Muennighoff, 2022, "SGPT", arXiv:2202.08904.
    """

    config_keys: list[str] = [*Transformer.config_keys, "bidirectional", "append_eos", "sgpt_brackets"]

    def __init__(
        self,
        model_name_or_path: str,
        *,
        bidirectional: bool = True,
        append_eos: bool = True,
        sgpt_brackets: bool = False,
        **kwargs: Any,
    ) -> None:
        kwargs.pop("unpad_inputs", None)  # packing is st_contrast's run-time mode, never a saved setting
        super().__init__(model_name_or_path, **kwargs)
        self.bidirectional = bidirectional
        self.append_eos = append_eos
        self.sgpt_brackets = sgpt_brackets
        if self.tokenizer is None:
            raise ValueError(f"{type(self).__name__} needs a text tokenizer; {self.processor!r} has none.")
        self._embedding_tokenizer = EmbeddingTokenizer(
            self.tokenizer, append_eos=append_eos, sgpt_brackets=sgpt_brackets
        )
        set_causal(self.model, not bidirectional)

    def preprocess(self, inputs, prompt: str | None = None, processing_kwargs=None, **kwargs) -> dict[str, Any]:
        """Tokenize texts with EOS after truncation, exact instruction boundaries and SGPT brackets.

        Plain-string inputs go through :class:`~st_contrast.modules.EmbeddingTokenizer`: ``prompt + text``
        is tokenized jointly, the tokens up to the first one holding a character of the text form the
        instruction (``instruction_mask`` marks them, for
        :class:`~st_contrast.modules.InstructionPooling`), brackets and EOS are inserted as token ids,
        and the batch is padded on the tokenizer's ``padding_side`` or packed when the module packs.
        Other inputs (pairs, messages) use the base class's processing.
        """
        if not inputs or not all(isinstance(text, str) for text in inputs) or processing_kwargs:
            if inputs and (self.append_eos or self.sgpt_brackets):
                logger.warning(
                    "%s: inputs that are not plain strings (or per-call processing_kwargs) use Sentence "
                    "Transformers' own tokenization: no EOS appended, no brackets, prompt_length from the "
                    "prompt alone.",
                    type(self).__name__,
                )
            return super().preprocess(inputs, prompt=prompt, processing_kwargs=processing_kwargs, **kwargs)
        texts = [text.lower() for text in inputs] if self.do_lower_case else list(inputs)
        max_length = kwargs.get("max_length") or self.max_seq_length
        encoded = self._embedding_tokenizer(texts, instruction=prompt, max_length=max_length, task=kwargs.get("task"))
        packed = should_flatten_inputs(self, "text", {"text": texts}, **kwargs)
        features = collate_ids(
            encoded,
            self.tokenizer,
            data_collator=self.data_collator if packed else None,
            position_offset=flatten_position_offset(self) if packed else 0,
        )
        features["modality"] = "text"
        return features

    def forward(self, features: dict[str, Any], **kwargs) -> dict[str, Any]:
        # The instruction mask is for pooling only: keep it away from the transformers forward.
        instruction_mask = features.pop("instruction_mask", None)
        try:
            return super().forward(features, **kwargs)
        finally:
            if instruction_mask is not None:
                features["instruction_mask"] = instruction_mask


class BidirectionalFlashTransformer(BidirectionalTransformer, metaclass=PackedModuleType):
    """:class:`BidirectionalTransformer`, packed (:func:`~st_contrast.modules.enable_packing`).

    Same arguments as :class:`BidirectionalTransformer` plus ``attention_backend`` (``"auto"``,
    ``"varlen"``, ``"flash_attn"``, ``"sdpa"``, ``"block_diagonal"``) and ``compile`` (as :class:`FlashTransformer`'s:
    ``torch.compile`` with dynamic shapes, :func:`~st_contrast.modules.compile_backbone`; apply LoRA first, then
    ``compile_backbone``); the packed kernels run non-causal. Calling it returns a packed
    ``BidirectionalTransformer``; ``isinstance(module, BidirectionalFlashTransformer)`` tells whether a
    ``BidirectionalTransformer`` runs packed. Models saved by st_contrast 0.1 under this name load through it.

    Example:
        ::

            from st_contrast.modules import BidirectionalFlashTransformer

            backbone = BidirectionalFlashTransformer("Qwen/Qwen3-0.6B", attention_backend="auto")
    """

    packed_base = BidirectionalTransformer

    def __new__(
        cls,
        model_name_or_path: str,
        *,
        attention_backend: str = "auto",
        compile: bool | dict[str, Any] = False,
        **kwargs: Any,
    ):
        return enable_packing(cls.packed_base(model_name_or_path, **kwargs), attention_backend, compile=compile)
