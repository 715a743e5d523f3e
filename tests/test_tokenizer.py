"""tokenizer.py: the character tokenizer."""

import pytest

from minirlhf.tasks import arithmetic, reviews
from minirlhf.tokenizer import TOKENIZER


def test_roundtrip_and_specials():
    ids = TOKENIZER.encode("the soup was cold.", bos=True, eos=True)
    assert ids[0] == TOKENIZER.bos_id and ids[-1] == TOKENIZER.eos_id
    assert TOKENIZER.decode(ids) == "the soup was cold."
    assert TOKENIZER.decode(ids + [TOKENIZER.pad_id], show_special=True) == "<bos>the soup was cold.<eos>"


def test_encode_names_bad_character_and_position():
    with pytest.raises(ValueError, match=r"'S' at position 4"):
        TOKENIZER.encode("the Soup")
    with pytest.raises(ValueError, match="outside the vocabulary"):
        TOKENIZER.decode([999])


def test_every_task_text_is_encodable():
    for text in reviews.pretraining_corpus(300) + arithmetic.pretraining_corpus(300):
        TOKENIZER.encode(text)
    for p, r in reviews.sft_dataset(100) + arithmetic.sft_dataset(100):
        TOKENIZER.encode(p + r)
