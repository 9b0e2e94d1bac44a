"""The digits prior's own tokenizer and captions: no download, every caption word one token."""

import pytest
import torch

pytest.importorskip("transformers")

from transformers import CLIPTokenizer  # noqa: E402

from nfsd_core.digits.prompts import (  # noqa: E402
    COARSE_PROMPTS, fine_prompt, prompt_digits, real_caption, vocabulary_words,
)
from nfsd_core.priors.degradation import NEGATIVE_PHRASES, negative_caption  # noqa: E402
from nfsd_core.priors.tokenizer import build_tokenizer, learn_merges, save_tokenizer  # noqa: E402
from nfsd_core.guidance import DEFAULT_NEGATIVE_PROMPT  # noqa: E402


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer(vocabulary_words())


def test_every_caption_word_is_one_token(tokenizer):
    for word in vocabulary_words():
        assert len(tokenizer(word, add_special_tokens=False).input_ids) == 1, word


def test_unknown_words_fall_back_to_bytes(tokenizer):
    tokens = tokenizer.convert_ids_to_tokens(tokenizer("a Zebra!").input_ids)
    assert tokens[0] == "<|startoftext|>" and tokens[-1] == "<|endoftext|>"
    assert tokens[1] == "a</w>" and "".join(tokens[2:-1]).replace("</w>", "") == "zebra!"


def test_papers_negative_prompt_uses_the_captions_words(tokenizer):
    """Every word of the paper's default negative prompt was seen in the degraded images' captions."""
    caption_words = {t for phrase in NEGATIVE_PHRASES for t in tokenizer(phrase, add_special_tokens=False).input_ids}
    prompt_words = set(tokenizer(DEFAULT_NEGATIVE_PROMPT, add_special_tokens=False).input_ids)
    prompt_words -= set(tokenizer(",", add_special_tokens=False).input_ids)
    assert prompt_words <= caption_words


def test_saved_tokenizer_reloads_from_either_format(tokenizer, tmp_path):
    save_tokenizer(tokenizer, tmp_path)
    texts = [fine_prompt(7), DEFAULT_NEGATIVE_PROMPT, "something else entirely"]
    expected = [tokenizer(t).input_ids for t in texts]
    assert [CLIPTokenizer.from_pretrained(tmp_path)(t).input_ids for t in texts] == expected
    (tmp_path / "tokenizer.json").unlink()  # the classic vocab.json + merges.txt pair alone
    reloaded = CLIPTokenizer.from_pretrained(tmp_path)
    assert [reloaded(t).input_ids for t in texts] == expected and reloaded.model_max_length == 77


def test_learnt_merges_make_words_whole():
    merges = learn_merges(["odd", "even", "seven"])
    assert ("e", "v") in merges and len(merges) <= 3 + 4 + 5


def test_captions_cover_fine_coarse_empty_and_negative():
    generator = torch.Generator().manual_seed(0)
    captions = [real_caption(7, generator) for _ in range(400)]
    assert {fine_prompt(7), "an odd handwritten digit", "a handwritten digit", ""} <= set(captions)
    assert not any({"even", "three"} & set(c.split()) for c in captions)
    assert 0.05 < captions.count("") / len(captions) < 0.16
    negatives = [negative_caption(generator) for _ in range(200)]
    assert all(part in NEGATIVE_PHRASES for c in negatives if c for part in c.split(", "))
    assert DEFAULT_NEGATIVE_PROMPT.count(",") + 1 == 10


def test_prompt_digits():
    assert prompt_digits(fine_prompt(3)) == (3,)
    assert prompt_digits("an odd handwritten digit") == (1, 3, 5, 7, 9)
    assert sorted(sum(COARSE_PROMPTS.values(), ())) == sorted([*range(10), *range(10)])
    with pytest.raises(ValueError, match="canonical prompts"):
        prompt_digits("a cat")
