"""Corpora, splits, vocabularies and batches (spike.models.spikegpt.text)."""

import math

import numpy as np
import pytest
import torch

from spike.models.spikegpt.text import (ENWIK8_BYTES, ByteVocab, CharVocab, builtin_text, eval_windows,
                        load_corpus, load_reference_vocab, random_windows, split_bounds,
                        unigram_entropy, vocab_from_config)


def test_builtin_corpus_split_and_vocab():
    text = builtin_text()
    assert 300_000 < len(text) < 700_000
    c = load_corpus()
    n = len(c.train) + len(c.valid) + len(c.test)
    assert n == len(text)
    assert len(c.train) == int(n * 0.9) and len(c.valid) == int(n * 0.95) - int(n * 0.9)
    assert c.vocab.kind == "chars" and c.vocab.size == len(set(text))
    assert c.vocab.decode(c.test[:50]) == text[int(n * 0.95):int(n * 0.95) + 50]
    h = unigram_entropy(c.train, c.vocab.size)
    assert 3.5 < h < math.log2(c.vocab.size)
    v2 = vocab_from_config(c.vocab.to_config())
    assert v2.chars == c.vocab.chars


def test_text_file_and_errors(tmp_path):
    p = tmp_path / "t.txt"
    p.write_text("héllo wörld " * 10, encoding="utf-8")
    c = load_corpus(p)
    assert c.vocab.decode(c.train[:5]) == "héllo"
    with pytest.raises(ValueError, match=r"'z'"):
        c.vocab.encode("hz")
    bad = tmp_path / "b.txt"
    bad.write_bytes(b"\xff\xfe\xfa abc")
    with pytest.raises(ValueError, match="not UTF-8"):
        load_corpus(bad)
    with pytest.raises(FileNotFoundError):
        load_corpus(tmp_path / "missing.txt")


def test_enwik8_byte_level(tmp_path):
    assert split_bounds(ENWIK8_BYTES, enwik8=True) == (90_000_000, 95_000_000)
    p = tmp_path / "enwik8"
    data = ("<page>ünïcode</page>\n" * 50).encode("utf-8")
    p.write_bytes(data)
    c = load_corpus(p)
    assert isinstance(c.vocab, ByteVocab) and c.vocab.unit == "byte"
    assert len(c.train) + len(c.valid) + len(c.test) == len(data)
    assert bytes(c.vocab.values[i] for i in c.train[:8]) == data[:8]
    assert vocab_from_config(c.vocab.to_config()).values == c.vocab.values


def test_reference_vocab_json(tmp_path):
    p = tmp_path / "vocab.json"
    p.write_text('{"0": "\\n", "1": " ", "2": "a"}', encoding="utf-16")
    v = load_reference_vocab(p)
    assert isinstance(v, CharVocab) and v.chars == ["\n", " ", "a"]


def test_windows():
    data = np.arange(100, dtype=np.uint16)
    x, y = random_windows(data, 10, 4, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (4, 10) and x.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1]) and torch.equal(y - x, torch.ones_like(x))
    targets = torch.cat([yb.reshape(-1) for _, yb in eval_windows(data, 16, 3)])
    assert targets.tolist() == list(range(1, 100))  # every target once, in order
    full = list(eval_windows(data, 16, 3, drop_last=True))
    assert all(xb.shape[1] == 16 for xb, _ in full)
    assert sum(yb.numel() for _, yb in eval_windows(data, 16, 3, max_tokens=40)) == 40
    with pytest.raises(ValueError, match="fewer than ctx_len"):
        random_windows(data[:5], 10, 1)
    assert unigram_entropy(np.arange(8) % 4) == pytest.approx(2.0)


def test_tokenizer_vocab(tmp_path):
    pytest.importorskip("tokenizers")
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    text = "the cat sat on the mat. the dog sat on the log. " * 20
    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator([text], trainers.WordLevelTrainer(special_tokens=["[UNK]"]))
    jp = tmp_path / "tok.json"
    tok.save(str(jp))
    src = tmp_path / "t.txt"
    src.write_text(text, encoding="utf-8")
    c = load_corpus(src, tokenizer=jp)
    assert c.vocab.kind == "tokenizer" and c.vocab.size == tok.get_vocab_size()
    assert len(c.train) > 0 and c.vocab.decode(c.train[:3]) == "the cat sat"
    v2 = vocab_from_config(c.vocab.to_config())
    assert v2.encode("the dog").tolist() == c.vocab.encode("the dog").tolist()


@pytest.mark.parametrize("kind", ["chars", "bytes", "enwik8-bytes", "enwik8-chars", "tokenizer"])
@pytest.mark.parametrize("tokens", [1, 7, 10_000])
def test_test_tokens_equal_the_loaded_split_without_holding_the_file(tmp_path, monkeypatch, kind, tokens):
    """``load_test_tokens`` = ``load_corpus(...).split("test")[:tokens]`` (the oracle), read in
    pieces of 5 characters (so pieces cut multi-byte characters); no read returns the whole file."""
    from pathlib import Path
    import spike.models.spikegpt.text as T

    text = "".join(f"line {i}: ünïcode → ok, the cat sat.\n" for i in range(300))
    path = tmp_path / ("enwik8" if kind.startswith("enwik8") else "t.txt")
    path.write_bytes(text.encode("utf-8"))
    if kind == "tokenizer":
        from tokenizers import Tokenizer, models, pre_tokenizers, trainers
        tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
        tok.pre_tokenizer = pre_tokenizers.Whitespace()
        tok.train_from_iterator([text], trainers.WordLevelTrainer(special_tokens=["[UNK]"]))
        tok.save(str(tmp_path / "tok.json"))
        vocab = T.TokenizerVocab.from_file(tmp_path / "tok.json")
    elif kind.endswith("bytes"):
        vocab = ByteVocab.from_bytes(text.encode("utf-8"))
    else:
        vocab = CharVocab.from_text(text)
    expected = load_corpus(path, vocab=vocab).split("test")[:tokens]
    size = path.stat().st_size
    reads = []
    real_open = Path.open

    def spying_open(self, *args, **kwargs):
        f = real_open(self, *args, **kwargs)
        read = f.read

        def spy(n=-1):
            data = read(n)
            reads.append(len(data))
            return data
        f.read = spy
        return f

    monkeypatch.setattr(T, "READ_CHUNK", 5)
    monkeypatch.setattr(Path, "open", spying_open)
    name, ids = T.load_test_tokens(path, vocab, tokens)
    assert np.array_equal(ids, expected) and len(ids) == min(tokens, len(expected))
    assert reads and max(reads) < size
