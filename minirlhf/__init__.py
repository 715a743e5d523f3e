"""minirlhf: RLHF from scratch, small enough for a laptop CPU."""
from .tokenizer import TOKENIZER, CharTokenizer, PAD_ID, BOS_ID, EOS_ID
from .utils import seed_everything, DATA_DIR, REPO_ROOT

__all__ = ["TOKENIZER", "CharTokenizer", "PAD_ID", "BOS_ID", "EOS_ID", "seed_everything", "DATA_DIR", "REPO_ROOT"]
