"""Text corpora and tokenisation for the language models (SpikeGPT).

Vocabularies (:class:`Vocab`, stored in checkpoints with :meth:`Vocab.to_config`):

* ``chars`` - character level (the default): the sorted set of the characters of the whole corpus
  (as the reference's ``src/utils.py`` builds it);
* ``bytes`` - byte level, for enwik8: the sorted set of byte values (enwik8's "characters" are
  bytes; its BPC is bits per byte);
* ``tokenizer`` - a HuggingFace ``tokenizers`` JSON file (e.g. GPT-NeoX's ``20B_tokenizer.json``,
  vocab 50277) that the user provides; the JSON text is kept in the checkpoint so generation and
  evaluation need no other file. Needs the ``tokenizers`` package.

Corpora (:func:`load_corpus`), each split into train / validation / test, fixed:

* built in (no file): the English text of Python's own documentation, ``pydoc_data.topics``
  (about 465k characters on Python 3.11): the topics in sorted key order, each followed by a blank
  line; split at 90% / 95% of the characters. The text comes with the running Python, so it
  differs a little between Python versions (the checkpoint keeps its vocabulary).
* a text file (UTF-8): split at 90% / 95% of its characters.
* enwik8 (a file named ``enwik8``, or any file of exactly 100,000,000 bytes): the standard split
  of the first 90M bytes for training, then 5M validation and 5M test, byte level.

With a tokenizer, the text is split first (at the same places) and each part is tokenised on its
own, so character and token models are evaluated on the same text.

Batches: :func:`random_windows` draws ``B`` random windows of ``ctx_len + 1`` tokens from a split
(inputs are the first ``ctx_len``, targets the last ``ctx_len``), as the reference's trainer;
:func:`eval_windows` covers a split with consecutive non-overlapping windows (the last one
shorter), each scored from a fresh state.
"""

from __future__ import annotations

import abc
import codecs

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from pydoc_data import topics
from typing import Any, Iterator, Optional, Sequence

import numpy as np
import torch

__all__ = [
    "Vocab",
    "CharVocab",
    "ByteVocab",
    "TokenizerVocab",
    "load_reference_vocab",
    "bits",
    "Corpus",
    "builtin_text",
    "load_corpus",
    "vocab_from_config",
    "random_windows",
    "eval_windows",
    "unigram_entropy",
    "ENWIK8_BYTES",
    "split_bounds",
    "SPLIT",
]

SPLIT = (0.90, 0.95)  # train ends at 90%, validation at 95% of the text
ENWIK8_BYTES = 100_000_000
ENWIK8_SPLIT = (90_000_000, 95_000_000)


# ---------------------------------------------------------------------------------------------
# vocabularies
# ---------------------------------------------------------------------------------------------


class Vocab(abc.ABC):
    """Maps text to token ids and back. ``kind`` is ``chars``, ``bytes`` or ``tokenizer``."""

    kind: str = ""
    unit: str = "token"

    @property
    @abc.abstractmethod
    def size(self) -> int: ...

    @abc.abstractmethod
    def encode(self, text) -> np.ndarray: ...

    @abc.abstractmethod
    def decode(self, ids: Sequence[int]) -> str: ...

    @abc.abstractmethod
    def to_config(self) -> dict[str, Any]: ...

    def dtype(self):
        return np.uint16 if self.size <= 65536 else np.int32


class CharVocab(Vocab):
    """Character level: ``chars`` is the sorted list of characters; id = position."""

    kind = "chars"
    unit = "character"

    def __init__(self, chars: Sequence[str]):
        chars = list(chars)
        if not chars or any(not isinstance(c, str) or len(c) != 1 for c in chars):
            raise ValueError("chars vocabulary: expected a non-empty list of single characters")
        if sorted(set(chars)) != chars:
            raise ValueError("chars vocabulary: characters must be unique and sorted")
        self.chars = chars
        self._codes = np.array([ord(c) for c in chars], dtype=np.int64)
        self._index = {c: i for i, c in enumerate(chars)}

    @classmethod
    def from_text(cls, text: str) -> "CharVocab":
        return cls(sorted(set(text)))

    @property
    def size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> np.ndarray:
        cps = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
        pos = np.searchsorted(self._codes, cps)
        pos = np.minimum(pos, len(self._codes) - 1)
        bad = self._codes[pos] != cps
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(f"character {text[i]!r} (position {i}) is not in the model's "
                             f"{self.size}-character vocabulary")
        return pos.astype(self.dtype())

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(self.chars[int(i)] for i in ids)

    def to_config(self) -> dict[str, Any]:
        return {"kind": self.kind, "chars": "".join(self.chars)}


class ByteVocab(Vocab):
    """Byte level (enwik8): ``values`` is the sorted list of byte values present."""

    kind = "bytes"
    unit = "byte"

    def __init__(self, values: Sequence[int]):
        values = [int(v) for v in values]
        if not values or sorted(set(values)) != values or values[0] < 0 or values[-1] > 255:
            raise ValueError("bytes vocabulary: expected sorted unique byte values in 0..255")
        self.values = values
        self._lut = np.full(256, -1, dtype=np.int16)
        self._lut[values] = np.arange(len(values))

    @classmethod
    def from_bytes(cls, data: bytes) -> "ByteVocab":
        counts = np.bincount(np.frombuffer(data, dtype=np.uint8), minlength=256)
        return cls(np.nonzero(counts)[0].tolist())

    @property
    def size(self) -> int:
        return len(self.values)

    def encode(self, data) -> np.ndarray:
        if isinstance(data, str):
            data = data.encode("utf-8")
        ids = self._lut[np.frombuffer(data, dtype=np.uint8)]
        if (ids < 0).any():
            i = int(np.argmax(ids < 0))
            raise ValueError(f"byte {data[i]} (position {i}) is not in the model's "
                             f"{self.size}-byte vocabulary")
        return ids.astype(self.dtype())

    def decode(self, ids: Sequence[int]) -> str:
        return bytes(self.values[int(i)] for i in ids).decode("utf-8", errors="replace")

    def to_config(self) -> dict[str, Any]:
        return {"kind": self.kind, "values": list(self.values)}


class TokenizerVocab(Vocab):
    """A HuggingFace ``tokenizers`` tokenizer given as its JSON text."""

    kind = "tokenizer"
    unit = "token"

    def __init__(self, json_text: str, source: str = "<json>"):
        try:
            from tokenizers import Tokenizer
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ValueError("token-level data needs the 'tokenizers' package "
                             "(pip install tokenizers)") from exc
        try:
            self.tokenizer = Tokenizer.from_str(json_text)
        except Exception as exc:
            raise ValueError(f"{source}: not a tokenizers JSON file: {exc}") from exc
        self.json_text = json_text
        self.source = source

    @classmethod
    def from_file(cls, path) -> "TokenizerVocab":
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"tokenizer file not found: {p}")
        return cls(p.read_text(encoding="utf-8"), str(p))

    @property
    def size(self) -> int:
        return int(self.tokenizer.get_vocab_size(with_added_tokens=True))

    def encode(self, text: str) -> np.ndarray:
        if isinstance(text, bytes):
            text = text.decode("utf-8", errors="ignore")
        ids = self.tokenizer.encode(text).ids
        return np.asarray(ids, dtype=self.dtype())

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode([int(i) for i in ids])

    def to_config(self) -> dict[str, Any]:
        return {"kind": self.kind, "json": self.json_text,
                "sha256": hashlib.sha256(self.json_text.encode("utf-8")).hexdigest()}


def vocab_from_config(cfg: dict[str, Any]) -> Vocab:
    """Rebuild a vocabulary from :meth:`Vocab.to_config` (as stored in a checkpoint)."""
    kind = cfg.get("kind") if isinstance(cfg, dict) else None
    if kind == "chars":
        return CharVocab(list(cfg["chars"]))
    if kind == "bytes":
        return ByteVocab(cfg["values"])
    if kind == "tokenizer":
        return TokenizerVocab(cfg["json"], "checkpoint")
    raise ValueError(f"vocabulary config: unknown kind {kind!r} (expected chars, bytes or tokenizer)")


def load_reference_vocab(path) -> CharVocab:
    """The ``vocab.json`` the reference writes (``{"0": char, ...}``, UTF-16)."""
    p = Path(path)
    raw = p.read_bytes()
    for enc in ("utf-16", "utf-8"):
        try:
            table = json.loads(raw.decode(enc))
            break
        except (UnicodeDecodeError, json.JSONDecodeError):
            continue
    else:
        raise ValueError(f"{p}: not a JSON vocabulary (UTF-16 or UTF-8)")
    try:
        chars = [table[str(i)] for i in range(len(table))]
    except KeyError as exc:
        raise ValueError(f"{p}: vocabulary ids must be 0..{len(table) - 1}; missing {exc}") from exc
    return CharVocab(chars)


# ---------------------------------------------------------------------------------------------
# corpora
# ---------------------------------------------------------------------------------------------


def builtin_text() -> str:
    """Python's documentation topics (``pydoc_data.topics``), sorted by key, blank-line separated."""
    return "".join(topics.topics[k].strip("\n") + "\n\n" for k in sorted(topics.topics))


@dataclass
class Corpus:
    """Token ids (numpy, uint16/int32) of each split, and the vocabulary."""

    name: str
    vocab: Vocab
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray

    def split(self, name: str) -> np.ndarray:
        if name not in ("train", "valid", "test"):
            raise ValueError(f"split: expected train, valid or test, got {name!r}")
        return getattr(self, name)

    def summary(self) -> str:
        return (f"{self.name}: {self.vocab.size} {self.vocab.kind} vocabulary; "
                f"{len(self.train):,} / {len(self.valid):,} / {len(self.test):,} {self.vocab.unit}s "
                f"(train / valid / test)")

    def score_line(self, split: str, res: dict[str, Any]) -> str:
        """One line for a score on ``split`` (``res``: :func:`spike.models.spikegpt.model.evaluate_lm`'s
        dict): perplexity for a tokenizer's tokens, bits per character (or byte) otherwise."""
        if self.vocab.kind == "tokenizer":
            return (f"{split} perplexity {res['ppl']:.3f} ({res['bits']:.4f} bits/token, "
                    f"{res['tokens']:,} tokens of {self.name})")
        return f"{split} BPC {res['bits']:.4f} ({res['tokens']:,} {self.vocab.unit}s of {self.name})"


def _is_enwik8(p: Path) -> bool:
    return p.name == "enwik8" or p.stat().st_size == ENWIK8_BYTES


def split_bounds(n: int, enwik8: bool = False) -> tuple[int, int]:
    """Where train ends and validation ends, for a text of ``n`` characters (bytes for enwik8:
    90M / 95M when ``n`` is enwik8's 100M, else 90% / 95%)."""
    if enwik8 and n == ENWIK8_BYTES:
        return ENWIK8_SPLIT
    return int(n * SPLIT[0]), int(n * SPLIT[1])


def load_corpus(path=None, vocab: Optional[Vocab] = None, tokenizer=None) -> Corpus:
    """Load and split a corpus (module docstring). ``path`` None is the built-in corpus.

    ``vocab``: use this vocabulary (e.g. a checkpoint's) instead of building one from the text;
    ``tokenizer``: a tokenizers JSON path (token level). A character (or byte) not in a given
    vocabulary is a ValueError naming it.
    """
    if tokenizer is not None:
        if vocab is not None:
            raise ValueError("give a vocabulary or a tokenizer, not both")
        vocab = TokenizerVocab.from_file(tokenizer)
    if path is None:
        text = builtin_text()
        return _from_text("pydoc_data.topics", text, vocab)
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"data file not found: {p}")
    if _is_enwik8(p):
        data = p.read_bytes()
        a, b = split_bounds(len(data), enwik8=True)
        parts = (data[:a], data[a:b], data[b:])
        if vocab is None:
            vocab = ByteVocab.from_bytes(data)
        if isinstance(vocab, ByteVocab):
            ids = [vocab.encode(x) for x in parts]
        else:  # characters or tokens: decode each split (partial characters at the cuts dropped)
            ids = [vocab.encode(x.decode("utf-8", errors="ignore")) for x in parts]
        return Corpus(f"enwik8 ({p})", vocab, *ids)
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{p}: not UTF-8 text ({exc})") from exc
    return _from_text(str(p), text, vocab)


READ_CHUNK = 1 << 20  # characters (bytes for enwik8) read at a time by :func:`load_test_tokens`


def _text_chunks(p: Path) -> Iterator[str]:
    """The UTF-8 text of ``p`` in pieces of at most ``READ_CHUNK`` characters (a character split
    across reads is decoded whole); a ValueError naming the file if it is not UTF-8."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    with p.open("rb") as f:
        try:
            while block := f.read(READ_CHUNK):
                yield decoder.decode(block)
            yield decoder.decode(b"", final=True)
        except UnicodeDecodeError as exc:
            raise ValueError(f"{p}: not UTF-8 text ({exc})") from exc


def load_test_tokens(path, vocab: Vocab, tokens: int) -> tuple[str, np.ndarray]:
    """``(name, ids)``: the first ``tokens`` ids of the test split of :func:`load_corpus` (``path``,
    ``vocab``), equal to ``load_corpus(path, vocab).split("test")[:tokens]``, without holding the
    file: enwik8 is read from the test split's byte offset, a text file is read twice in pieces
    (to count its characters, then to keep the test split's first characters). A byte or
    character vocabulary needs one character (byte) per token; a tokenizer's tokens are encoded
    from the whole test split. ``path`` None is the built-in corpus (small: loaded whole)."""
    if path is None:
        corpus = load_corpus(None, vocab=vocab)
        return corpus.name, np.asarray(corpus.split("test")[: int(tokens)])
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"data file not found: {p}")
    per_token = isinstance(vocab, (ByteVocab, CharVocab))
    if _is_enwik8(p):
        n = p.stat().st_size
        _, b = split_bounds(n, enwik8=True)
        with p.open("rb") as f:
            f.seek(b)
            part = f.read(int(tokens) if per_token and isinstance(vocab, ByteVocab) else n - b)
        if not per_token or not isinstance(vocab, ByteVocab):  # characters or tokens, as load_corpus decodes
            ids = vocab.encode(part.decode("utf-8", errors="ignore"))
        else:
            ids = vocab.encode(part)
        return f"enwik8 ({p})", np.asarray(ids)[: int(tokens)]
    n = sum(len(piece) for piece in _text_chunks(p))
    if n < 3:
        raise ValueError(f"{p}: too little text ({n} characters) to split")
    _, b = split_bounds(n)
    keep = int(tokens) if per_token else n - b
    pieces, seen, kept = [], 0, 0
    for piece in _text_chunks(p):
        lo = max(b - seen, 0)
        seen += len(piece)
        if lo < len(piece) and kept < keep:
            pieces.append(piece[lo:lo + keep - kept])
            kept += len(pieces[-1])
    text = "".join(pieces)
    ids = vocab.encode(text.encode("utf-8")) if isinstance(vocab, ByteVocab) else vocab.encode(text)
    return str(p), np.asarray(ids)[: int(tokens)]


def _from_text(name: str, text: str, vocab: Optional[Vocab]) -> Corpus:
    if len(text) < 3:
        raise ValueError(f"{name}: too little text ({len(text)} characters) to split")
    if vocab is None:
        vocab = CharVocab.from_text(text)
    a, b = split_bounds(len(text))
    if isinstance(vocab, ByteVocab):
        parts = [vocab.encode(x.encode("utf-8")) for x in (text[:a], text[a:b], text[b:])]
    else:
        parts = [vocab.encode(x) for x in (text[:a], text[a:b], text[b:])]
    return Corpus(name, vocab, *parts)


# ---------------------------------------------------------------------------------------------
# batches
# ---------------------------------------------------------------------------------------------


def random_windows(data: np.ndarray, ctx_len: int, batch_size: int,
                   generator: Optional[torch.Generator] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch_size`` random windows of ``ctx_len + 1`` tokens: ``(x [B, ctx], y [B, ctx])``
    (``y`` is ``x`` shifted by one). Window starts are uniform over the split."""
    n = len(data)
    if n < ctx_len + 1:
        raise ValueError(f"split has {n} tokens, fewer than ctx_len + 1 = {ctx_len + 1}")
    starts = torch.randint(0, n - ctx_len, (batch_size,), generator=generator).numpy()
    idx = starts[:, None] + np.arange(ctx_len + 1)[None, :]
    win = torch.from_numpy(data[idx].astype(np.int64))
    return win[:, :-1], win[:, 1:]


def eval_windows(data: np.ndarray, ctx_len: int, batch_size: int,
                 max_tokens: Optional[int] = None,
                 drop_last: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Consecutive non-overlapping windows covering the split's targets 1..n-1 (``max_tokens``:
    only the first ones); full windows are batched ``batch_size`` at a time, a shorter last window
    comes alone (not at all with ``drop_last``)."""
    n = len(data) - 1
    if max_tokens is not None:
        n = min(n, int(max_tokens))
    full = n // ctx_len
    for b0 in range(0, full, batch_size):
        b1 = min(full, b0 + batch_size)
        idx = (np.arange(b0, b1) * ctx_len)[:, None] + np.arange(ctx_len + 1)[None, :]
        win = torch.from_numpy(data[idx].astype(np.int64))
        yield win[:, :-1], win[:, 1:]
    rest = n - full * ctx_len
    if rest > 0 and not drop_last:
        s = full * ctx_len
        win = torch.from_numpy(data[s:s + rest + 1].astype(np.int64))[None]
        yield win[:, :-1], win[:, 1:]


def unigram_entropy(data: np.ndarray, vocab_size: Optional[int] = None) -> float:
    """Entropy in bits per token of the split's token frequencies (a no-context baseline)."""
    counts = np.bincount(np.asarray(data, dtype=np.int64), minlength=vocab_size or 0)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())


def bits(loss_nats: float) -> float:
    """Nats to bits."""
    return loss_nats / math.log(2)
