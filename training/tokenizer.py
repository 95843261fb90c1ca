"""The code tokenizer shared by the embedded denoiser and its autoregressive twin.

Byte-level BPE (any byte sequence round-trips: tabs, CRLF, emoji) learnt with `tokenizers`.
Before BPE, text is split so that a newline plus the indentation after it is one piece:
the merges then learn whole indentation levels (``"\n    "``, ``"\n        "``) as single
tokens, and identifiers, numbers and punctuation runs never merge across each other.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

from dlm_lsp.model.random_checkpoint import SPECIAL_TOKENS

# PSM fill-in-the-middle sentinels (Bavarian et al. 2022), used by the AR twin only; both
# models share one vocabulary so that their numbers compare.
FIM_TOKENS = ["<fim_prefix>", "<fim_suffix>", "<fim_middle>"]
ALL_SPECIAL = SPECIAL_TOKENS + FIM_TOKENS

CODE_SPLIT = Regex(
    r"[\r\n]+[ \t]*"  # line break(s) and the next line's indentation
    r"| ?[\p{L}_][\p{L}\p{N}_]*"  # identifiers and keywords, with one leading space
    r"| ?\p{N}{1,3}"  # numbers in groups of up to three digits
    r"| ?[^\s\p{L}\p{N}_]+"  # punctuation and operator runs
    r"|[ \t]+"  # other horizontal white space
    r"|\s"
)


def pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.Sequence([
        pre_tokenizers.Split(CODE_SPLIT, behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])


def train_tokenizer(texts: Iterable[str], vocab_size: int = 8192) -> Tokenizer:
    """Learn BPE merges from `texts`; special tokens take the first ids (``<pad>`` is 0)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizer()
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=ALL_SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    tok.encode_special_tokens = True  # "<mask>" in source code is text, as at serving time
    return tok
