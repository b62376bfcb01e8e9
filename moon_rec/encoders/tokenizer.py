"""A word-piece tokenizer trained offline on the catalog text, saved with the checkpoint.

Built with the `tokenizers` library (no hub download): lower-casing + accent stripping,
BERT pre-tokenisation, WordPiece with a small vocabulary. Special tokens have fixed ids so
that model configs can name them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers

from moon_rec.data.errors import DataError

PAD, UNK, BOS, EOS, IMG, VID = "[PAD]", "[UNK]", "[BOS]", "[EOS]", "[IMG]", "[VID]"
SPECIAL_TOKENS: tuple[str, ...] = (PAD, UNK, BOS, EOS, IMG, VID)
TOKENIZER_FILE = "tokenizer.json"


class MoonTokenizer:
    """Text -> padded token ids.

    Args:
        tokenizer: a `tokenizers.Tokenizer` whose vocabulary starts with SPECIAL_TOKENS.

    Example:
        >>> tok = MoonTokenizer.train(["red silk dress", "blue denim jacket"], vocab_size=100)
        >>> ids, mask = tok(["red dress"], max_len=8)
        >>> ids.shape
        torch.Size([1, 8])
    """

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        for i, tok in enumerate(SPECIAL_TOKENS):
            if tokenizer.token_to_id(tok) != i:
                raise ValueError(f"tokenizer must have {tok} at id {i}")

    pad_id, unk_id, bos_id, eos_id, img_id, vid_id = range(len(SPECIAL_TOKENS))

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = 2000) -> MoonTokenizer:
        """Build a word-piece vocabulary from ``texts`` (catalog titles, attributes, queries).

        The vocabulary is every character (as a word start and as a ``##`` continuation,
        so that any word can be spelled) plus the most frequent whole words, up to
        ``vocab_size``; ties are broken alphabetically. We count with the `tokenizers`
        normaliser and pre-tokeniser but not with its ``WordPieceTrainer``, whose ties
        follow hash order: two runs on the same text gave different ids, which breaks
        reproducible runs and exact resume.
        """
        normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=True)
        pre = pre_tokenizers.BertPreTokenizer()
        counts: Counter[str] = Counter()
        for t in texts:
            for word, _span in pre.pre_tokenize_str(normalizer.normalize_str(t)):
                counts[word] += 1
        chars = sorted({c for w in counts for c in w})
        vocab = [*SPECIAL_TOKENS, *chars, *(f"##{c}" for c in chars)]
        seen = set(vocab)
        words = sorted((w for w in counts if w not in seen), key=lambda w: (-counts[w], w))
        vocab += words[: max(0, vocab_size - len(vocab))]
        tok = Tokenizer(models.WordPiece(vocab={w: i for i, w in enumerate(vocab)}, unk_token=UNK,
                                         max_input_chars_per_word=50))
        tok.normalizer = normalizer
        tok.pre_tokenizer = pre
        tok.decoder = decoders.WordPiece()
        return cls(tok)

    @classmethod
    def load(cls, path: str | Path) -> MoonTokenizer:
        """Load from a checkpoint directory (or the tokenizer.json file itself)."""
        p = Path(path)
        if p.is_dir():
            p = p / TOKENIZER_FILE
        if not p.exists():
            raise FileNotFoundError(f"no tokenizer at {p}")
        return cls(Tokenizer.from_file(str(p)))

    def save(self, directory: str | Path) -> Path:
        p = Path(directory) / TOKENIZER_FILE
        self.tokenizer.save(str(p))
        return p

    @property
    def vocab_size(self) -> int:
        return int(self.tokenizer.get_vocab_size())

    def __call__(
        self, texts: Sequence[str], max_len: int, *, field: str = "text", add_eos: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokenise, truncate and right-pad.

        Returns:
            (input_ids LongTensor[N, max_len], attention_mask LongTensor[N, max_len]); each
            row has at least one real token.

        Raises:
            DataError: naming ``field`` and the row when a text is not a non-blank string.
        """
        for i, t in enumerate(texts):
            if not isinstance(t, str) or not t.strip():
                raise DataError("empty or missing text", column=field, row=i)
        encs = self.tokenizer.encode_batch(list(texts), add_special_tokens=False)
        n = len(encs)
        ids = torch.full((n, max_len), self.pad_id, dtype=torch.long)
        mask = torch.zeros((n, max_len), dtype=torch.long)
        cap = max_len - 1 if add_eos else max_len
        for i, e in enumerate(encs):
            row = e.ids[:cap] or [self.unk_id]
            if add_eos:
                row = [*row, self.eos_id]
            ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
            mask[i, : len(row)] = 1
        return ids, mask

    def decode(self, ids: Sequence[int]) -> str:
        return str(self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=True))
