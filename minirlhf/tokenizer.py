"""A character-level tokenizer shared by every toy task.

Ids 0-2 are special: PAD (fills batches, never predicted), BOS (starts every sequence) and EOS (the
model's "I am done"). Keeping PAD separate from EOS matters in RLHF: a policy must be able to emit EOS,
while PAD positions must be masked out of every loss.
"""
from __future__ import annotations

PAD, BOS, EOS = "<pad>", "<bos>", "<eos>"
PAD_ID, BOS_ID, EOS_ID = 0, 1, 2
SPECIALS = (PAD, BOS, EOS)
CHARS = "\n !'()*+,-./0123456789:;<=>?abcdefghijklmnopqrstuvwxyz"


class CharTokenizer:
    """Maps each allowed character to one id. `encode` refuses anything else, loudly."""

    def __init__(self, chars: str = CHARS):
        if len(set(chars)) != len(chars):
            raise ValueError("tokenizer characters must be unique")
        self.itos = list(SPECIALS) + list(chars)
        self.stoi = {c: i for i, c in enumerate(chars, start=len(SPECIALS))}
        self.pad_id, self.bos_id, self.eos_id = PAD_ID, BOS_ID, EOS_ID

    @property
    def vocab_size(self) -> int:
        return len(self.itos)

    def encode(self, text: str, bos: bool = False, eos: bool = False) -> list[int]:
        """Text -> ids, optionally wrapped in BOS ... EOS. Raises ValueError naming the bad character."""
        ids = [self.bos_id] if bos else []
        for pos, ch in enumerate(text):
            i = self.stoi.get(ch)
            if i is None:
                raise ValueError(
                    f"cannot encode {ch!r} at position {pos} of {_preview(text, pos)}: the vocabulary is "
                    f"lower-case letters, digits, space, newline and {_punct()!r}. Lower-case the text or "
                    f"remove that character."
                )
            ids.append(i)
        if eos:
            ids.append(self.eos_id)
        return ids

    def decode(self, ids, show_special: bool = False) -> str:
        """Ids -> text. PAD is always dropped; BOS/EOS appear as <bos>/<eos> only if show_special."""
        out = []
        for i in (int(i) for i in ids):
            if not 0 <= i < len(self.itos):
                raise ValueError(f"token id {i} is outside the vocabulary (0..{len(self.itos) - 1})")
            if i == self.pad_id or (i < len(SPECIALS) and not show_special):
                continue
            out.append(self.itos[i])
        return "".join(out)


def _punct() -> str:
    return "".join(c for c in CHARS if not c.isalnum() and c not in " \n")


def _preview(text: str, pos: int, width: int = 20) -> str:
    start = max(0, pos - width)
    return repr(("..." if start else "") + text[start:pos + width] + ("..." if pos + width < len(text) else ""))


TOKENIZER = CharTokenizer()
