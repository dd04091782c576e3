"""EOS after truncation, exact instruction boundaries, SGPT brackets, and pooling over what they leave."""

from __future__ import annotations

import pytest
import torch
from llm2vec_helpers import build_backbone
from packaging.version import Version
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules import Pooling

from st_contrast.compat import installed_version
from st_contrast.modules import BidirectionalTransformer, EmbeddingTokenizer, InstructionPooling

LONG = "A man in a red shirt is playing a guitar on a crowded street corner while people walk by. " * 3
TEXTS = ["A man plays.", LONG, "y outside", "ys in the park"]
INSTRUCTION = "The man pla"  # ends inside a word: the joint tokenization merges across it for some texts


def test_eos_is_appended_after_truncation(tiny_model_factory):
    backbone = BidirectionalTransformer(tiny_model_factory("llama"), max_seq_length=16)
    tokenizer = backbone.tokenizer
    features = backbone.preprocess(TEXTS[:2])
    for row, text in zip(features["input_ids"].tolist(), TEXTS[:2], strict=True):
        expected = tokenizer(text, truncation=True, max_length=15)["input_ids"] + [tokenizer.eos_token_id]
        assert row[: len(expected)] == expected and row[len(expected) :] == [tokenizer.pad_token_id] * (
            len(row) - len(expected)
        )
    assert features["input_ids"].shape[1] == 16


def test_tokenizer_that_adds_eos_gets_no_second_one(tiny_model_factory):
    from tokenizers import processors

    backbone = BidirectionalTransformer(tiny_model_factory("llama"), max_seq_length=16)
    tokenizer = backbone.tokenizer
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", bos), ("</s>", eos)]
    )
    encoder = EmbeddingTokenizer(tokenizer)
    assert encoder.tokenizer_adds_eos
    rows = encoder(TEXTS[:2], max_length=16).input_ids
    assert rows == tokenizer(TEXTS[:2], truncation=True, max_length=16)["input_ids"]
    assert all(row[-1] == eos and row[-2] != eos for row in rows) and len(rows[1]) == 16


@pytest.mark.parametrize("adds_eos", [False, True])
def test_the_eos_after_an_instruction_and_an_empty_text_is_not_the_instructions(tiny_model_factory, adds_eos):
    """Whether the tokenizer adds the EOS or the module appends it, the same ids get the same instruction boundary:
    the EOS is pooled (it is all an empty text has), never counted as the instruction's."""
    from tokenizers import processors

    backbone = BidirectionalTransformer(tiny_model_factory("llama"), max_seq_length=16)
    tokenizer = backbone.tokenizer
    if adds_eos:
        bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
        tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
            single="<s> $A </s>", special_tokens=[("<s>", bos), ("</s>", eos)]
        )
    encoded = EmbeddingTokenizer(tokenizer)(["", "A man."], instruction="Retrieve: ", max_length=16)
    assert EmbeddingTokenizer(tokenizer).tokenizer_adds_eos == adds_eos
    for row, instruction_length in zip(encoded.input_ids, encoded.instruction_lengths, strict=True):
        assert row[-1] == tokenizer.eos_token_id and instruction_length < len(row)
        assert tokenizer.decode(row[1:instruction_length]).strip() == "Retrieve:"
    assert encoded.instruction_lengths[0] == len(encoded.input_ids[0]) - 1  # only the EOS is left to pool


def test_instruction_boundary_comes_from_the_joint_tokenization(tiny_model_factory):
    backbone = BidirectionalTransformer(tiny_model_factory("llama"))
    tokenizer = backbone.tokenizer
    prompt = "Retrieve: "
    features = backbone.preprocess(["A man plays."], prompt=prompt)
    ids = features["input_ids"][0].tolist()
    n = int(features["instruction_mask"][0].sum())
    # "Retrieve: " alone ends with a bare-space token that merges into "ĠA" in the joint text, so Sentence
    # Transformers' prompt_length (the prompt tokenized alone) would drop the text's first token.
    assert backbone._get_prompt_length(prompt) == n + 1
    assert tokenizer.decode(ids[1:n]) == "Retrieve:" and tokenizer.decode(ids[n:-1]) == " A man plays."


def check_boundary(tokenizer, ids: list[int], n: int, instruction: str, text: str) -> None:
    """Independent of the offsets: decoding splits ``instruction + text`` at the last token free of text."""
    head, tail = tokenizer.decode(ids[1:n]), tokenizer.decode(ids[n:-1])
    assert head + tail == instruction + text and instruction.startswith(head)
    assert not instruction.startswith(tokenizer.decode(ids[1 : n + 1])), "token n holds no text character"


def single_row_tokens(backbone, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return backbone.model(input_ids=torch.tensor([ids])).last_hidden_state[0]


def reference_pool(tokens: torch.Tensor, mode: str) -> torch.Tensor:
    if mode == "mean":
        return tokens.mean(0)
    if mode == "weightedmean":
        weights = torch.arange(1, len(tokens) + 1, dtype=tokens.dtype).unsqueeze(1)
        return (tokens * weights).sum(0) / weights.sum()
    return tokens[-1]


@pytest.mark.parametrize("implementation", ["sdpa", "packed_sdpa"])
def test_pooling_with_per_row_instructions_matches_hand_computation(implementation, tiny_model_factory):
    backbone = build_backbone(tiny_model_factory("qwen3"), implementation, max_seq_length=40).eval()
    tokenizer = backbone.tokenizer
    modes = ("mean", "weightedmean", "lasttoken")
    model = SentenceTransformer(modules=[backbone, InstructionPooling(32, modes)], device="cpu").eval()
    encoded = backbone._embedding_tokenizer(TEXTS, instruction=INSTRUCTION, max_length=40)
    lengths = encoded.instruction_lengths
    assert len(set(lengths)) > 1, "the texts must give different instruction boundaries"
    expected = []
    for ids, n, text in zip(encoded.input_ids, lengths, TEXTS, strict=True):
        if len(ids) < 40:
            check_boundary(tokenizer, ids, n, INSTRUCTION, text)
        tokens = single_row_tokens(backbone, ids)[n:]
        expected.append(torch.cat([reference_pool(tokens, mode) for mode in modes]))
    for side in ("right", "left"):
        tokenizer.padding_side = side
        actual = model.encode(TEXTS, prompt=INSTRUCTION, convert_to_tensor=True, batch_size=len(TEXTS))
        torch.testing.assert_close(actual, torch.stack(expected), atol=2e-5, rtol=1e-4)


# Sentence Transformers < 6.2 counts weightedmean weights from the padded row's start: left padding shifts them.
STOCK_WEIGHTS_FOLLOW_LEFT_PADDING = installed_version("sentence-transformers") < Version("6.2")


@pytest.mark.parametrize("implementation", ["sdpa", "packed_sdpa"])
@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("pooling_class", [Pooling, InstructionPooling])
def test_stock_pooling_is_right_for_both_paddings_and_packing(
    implementation, side, pooling_class, tiny_model_factory, request
):
    """ST's own weightedmean / lasttoken, and InstructionPooling without an instruction, match the hand computation."""
    if pooling_class is Pooling and side == "left" and implementation == "sdpa" and STOCK_WEIGHTS_FOLLOW_LEFT_PADDING:
        reason = "sentence-transformers < 6.2 weights left-padded rows from the padding's start (fixed in 6.2)"
        request.applymarker(pytest.mark.xfail(reason=reason, strict=True))
    backbone = build_backbone(tiny_model_factory("llama"), implementation, max_seq_length=40).eval()
    backbone.tokenizer.padding_side = side
    modes = ("weightedmean", "lasttoken")
    model = SentenceTransformer(modules=[backbone, pooling_class(32, modes)], device="cpu").eval()
    rows = backbone._embedding_tokenizer(TEXTS, max_length=40).input_ids
    expected = [torch.cat([reference_pool(single_row_tokens(backbone, ids), m) for m in modes]) for ids in rows]
    actual = model.encode(TEXTS, convert_to_tensor=True, batch_size=len(TEXTS))
    torch.testing.assert_close(actual, torch.stack(expected), atol=2e-5, rtol=1e-4)


def test_without_an_instruction_mask_a_stock_prompt_length_is_left_out_as_pooling_does():
    torch.manual_seed(0)
    tokens, mask = torch.randn(2, 6, 8), torch.tensor([[1] * 6, [1] * 4 + [0] * 2])
    modes = ("mean", "weightedmean", "lasttoken")
    for extra in ({"prompt_length": 2}, {}):
        expected = Pooling(8, modes, include_prompt=False)(
            {"token_embeddings": tokens, "attention_mask": mask, **extra}
        )
        actual = InstructionPooling(8, modes)({"token_embeddings": tokens, "attention_mask": mask, **extra})
        torch.testing.assert_close(actual["sentence_embedding"], expected["sentence_embedding"])
    without_prompt = InstructionPooling(8, "mean")({"token_embeddings": tokens, "attention_mask": mask})
    prompt_left_out = InstructionPooling(8, "mean")(
        {"token_embeddings": tokens, "attention_mask": mask, "prompt_length": 2}
    )
    torch.testing.assert_close(prompt_left_out["sentence_embedding"][1], tokens[1, 2:4].mean(0))
    assert not torch.allclose(without_prompt["sentence_embedding"], prompt_left_out["sentence_embedding"])


def test_sgpt_brackets_are_inserted_as_token_ids(tiny_model_factory, tmp_path):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
    from helpers.tiny import tiny_model  # its tokenizer has the full byte alphabet, so "[" and "{" are tokens

    backbone = BidirectionalTransformer(tiny_model(tmp_path / "llama"), sgpt_brackets=True, max_seq_length=12)
    tokenizer = backbone.tokenizer
    model = SentenceTransformer(modules=[backbone, Pooling(64, "lasttoken")], device="cpu").eval()
    for task, (open_, close) in {"query": "[]", "document": "{}"}.items():
        ids = model.preprocess(["A dog runs.", LONG], task=task)["input_ids"].tolist()
        assert (
            tokenizer.decode(ids[0], skip_special_tokens=False).replace("<pad>", "")
            == f"<s>{open_}A dog runs.{close}</s>"
        )
        text_ids = tokenizer(LONG, add_special_tokens=False)["input_ids"][:8]
        assert ids[1] == [
            tokenizer.bos_token_id,
            tokenizer.convert_tokens_to_ids(open_),
            *text_ids,
            tokenizer.convert_tokens_to_ids(close),
            tokenizer.eos_token_id,
        ]
    assert "[" not in tokenizer.decode(model.preprocess(["A dog."])["input_ids"][0])  # plain encode: none
    query, document = model.encode_query(["A dog."]), model.encode_document(["A dog."])
    assert not torch.allclose(torch.as_tensor(query), torch.as_tensor(document))


def test_decoder_without_eos_is_refused(tiny_model_factory):
    backbone = BidirectionalTransformer(tiny_model_factory("llama"), append_eos=False)
    tokenizer = backbone.tokenizer
    tokenizer.eos_token = None
    with pytest.raises(ValueError, match="has no EOS token.*append_eos=False"):
        EmbeddingTokenizer(tokenizer)


def test_instruction_that_leaves_no_text_is_refused(tiny_model_factory):
    backbone = BidirectionalTransformer(tiny_model_factory("llama"), max_seq_length=8)
    with pytest.raises(ValueError, match="leaves no token of the text after the instruction.*raise max_seq_length"):
        backbone.preprocess(["A dog runs."], prompt="Represent this sentence for retrieval: ")
    assert backbone.preprocess(["A dog runs."], prompt="Q: ")["input_ids"].shape[1] == 8
