"""SpikeGPT: initialisation, RNN mode == parallel forward, reference checkpoints, loss, CLI."""

import math
import re

import pytest
import torch
import torch.nn.functional as F

from spike.models import build_model
from spike.models.spikegpt.model import (L2Wrap, PRESETS, SpikeGPT, build_spikegpt,
                                   convert_reference_state_dict, generate, lm_loss, load_reference,
                                   to_reference_state_dict)
from spike.neurons import LIF


@pytest.fixture(autouse=True)
def one_thread():
    """One torch/numba thread: on a shared 2-core machine, OpenMP barriers of 2 threads stall
    whenever another process holds a core (steps then take 100x longer)."""
    import numba

    t, n = torch.get_num_threads(), numba.get_num_threads()
    torch.set_num_threads(1)
    numba.set_num_threads(1)
    yield
    torch.set_num_threads(t)
    numba.set_num_threads(n)


def _model(V=23, L=2, C=32, ctx=32, spiking=True, scale=8.0, seed=0):
    torch.manual_seed(seed)
    m = SpikeGPT(V, n_layer=L, n_embd=C, ctx_len=ctx, spiking=spiking)
    with torch.no_grad():  # larger branch outputs so that the LIF layers spike at random init
        for b in m.blocks:
            b.att.output.weight.mul_(scale)
            b.ffn.value.weight.mul_(scale)
    return m.eval()


def _rnn_vs_parallel(m, idx):
    rec = {}
    with torch.no_grad():
        logits, st_par = m(idx, return_state=True, record=rec)
    state, outs, recs = None, [], []
    for t in range(idx.shape[1]):
        r = {}
        out, state = m.step(idx[:, t], state, record=r)
        outs.append(out)
        recs.append(r)
    return logits, torch.stack(outs, 1), rec, recs, st_par, state


def test_init_formulas_and_neurons():
    L, C = 3, 8
    m = SpikeGPT(11, n_layer=L, n_embd=C, ctx_len=4)
    for l, b in enumerate(m.blocks):
        h = torch.arange(C, dtype=torch.float64)
        r01, r10 = l / (L - 1), 1 - l / L
        exp_decay = -5 + 8 * (h / (C - 1)) ** (0.7 + 1.3 * r01)
        exp_first = math.log(0.3) + 0.5 * torch.tensor([(i + 1) % 3 - 1 for i in range(C)], dtype=torch.float64)
        mk = (h / C) ** r10
        checks = [(b.att.time_decay, exp_decay), (b.att.time_first, exp_first), (b.att.time_mix_k, mk),
                  (b.att.time_mix_v, mk + 0.3 * r01), (b.att.time_mix_r, (h / C) ** (0.5 * r10)),
                  (b.ffn.time_mix_k, mk), (b.ffn.time_mix_r, mk)]
        for got, want in checks:
            assert torch.allclose(got.double(), want, atol=1e-6)
        for sn in (b.sn1, b.sn2):  # SpikingJelly LIF(tau=2, decay_input, v_reset=0)
            assert isinstance(sn, LIF)
            assert float(sn.beta) == 0.5 and sn.gain == 0.5 and float(sn.threshold) == 1.0
            assert sn.fire_ge and sn.reset == "zero" and not sn.reset_delay and not sn.detach_reset
            assert sn.surrogate.name == "atan" and sn.surrogate.param == 2.0
        assert b.ffn.key.weight.shape == (4 * C, C) and b.ffn.value.weight.shape == (C, 4 * C)
    with pytest.raises(ValueError, match="at least 2 layers"):
        SpikeGPT(11, n_layer=1, n_embd=8)
    assert set(PRESETS) == {"tiny", "46m", "216m"}
    assert PRESETS["46m"] == dict(n_layer=12, n_embd=512, ctx_len=1024)
    assert PRESETS["216m"]["vocab_size"] == 50277
    assert isinstance(build_model("spikegpt", vocab_size=5, n_layer=2, n_embd=4), SpikeGPT)


def test_binary_embedding_and_no_spikes():
    m = _model()
    x = torch.tensor([[-0.5, 0.0, 0.7]], requires_grad=True)
    y = m.emb_spike(x)
    assert y.tolist() == [[0.0, 1.0, 1.0]]
    y.sum().backward()
    assert torch.allclose(x.grad, 1 / (1 + (math.pi * x.detach()) ** 2))  # ATan(2)
    idx = torch.randint(0, 23, (2, 8))
    rec = {}
    m(idx, record=rec)
    assert set(rec) == {"emb"} | {f"blocks.{i}.sn{j}" for i in range(2) for j in (1, 2)}
    for v in rec.values():
        assert set(v.unique().tolist()) <= {0.0, 1.0}
    ns = _model(spiking=False)
    assert isinstance(ns.emb_spike, torch.nn.Identity) and isinstance(ns.blocks[0].sn1, torch.nn.Identity)
    assert ns.num_params() == m.num_params()
    assert (ns(idx) - m(idx)).abs().max() > 0


@pytest.mark.parametrize("spiking", [True, False])
def test_rnn_mode_equals_parallel_random_weights(spiking):
    m = _model(spiking=spiking)
    idx = torch.randint(0, 23, (2, 24), generator=torch.Generator().manual_seed(1))
    logits, steps, rec, recs, st_par, st_rnn = _rnn_vs_parallel(m, idx)
    assert (steps - logits).abs().max() < 1e-5
    for key, spk in rec.items():
        rnn = torch.stack([r[key] for r in recs])
        assert torch.equal(spk, rnn) if spiking else torch.allclose(spk, rnn, atol=1e-5), key
    if spiking:
        assert 0 < sum(float(rec[k].sum()) for k in rec if ".sn" in k)  # the test sees spikes
    for a, b in zip(st_par, st_rnn):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-5)
    # continuing from a state in parallel (prefill + chunk) equals the whole sequence
    with torch.no_grad():
        _, st = m(idx[:, :10], return_state=True)
        tail, _ = m(idx[:, 10:], state=st)
    assert (tail - logits[:, 10:]).abs().max() < 1e-5


def test_rnn_mode_equals_parallel_after_training():
    from spike.models.spikegpt.text import load_corpus, random_windows

    corpus = load_corpus()
    torch.manual_seed(0)
    m = build_spikegpt("tiny", corpus.vocab.size, ctx_len=32)
    opt = torch.optim.Adam(m.parameters(), lr=3e-3, betas=(0.9, 0.99), eps=4e-9)
    g = torch.Generator().manual_seed(0)
    first = None
    for _ in range(25):
        x, y = random_windows(corpus.train, 32, 8, g)
        loss = lm_loss(m(x), y)
        first = first if first is not None else float(loss.detach())
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        opt.step()
    assert float(loss.detach()) < first - 0.3  # it learned something
    m.eval()
    x, _ = random_windows(corpus.valid, 32, 2, g)
    logits, steps, rec, recs, _, _ = _rnn_vs_parallel(m, x)
    assert (steps - logits).abs().max() < 1e-5
    for key, spk in rec.items():
        assert torch.equal(spk, torch.stack([r[key] for r in recs])), key
    assert sum(float(rec[k].sum()) for k in rec if ".sn" in k) > 0


def test_l2wrap_gradient():
    torch.manual_seed(0)
    logits = torch.randn(3, 4, 7, requires_grad=True)
    y = torch.randint(0, 7, (3, 4))
    lm_loss(logits, y).backward()
    ref = logits.detach().clone().requires_grad_()
    F.cross_entropy(ref.reshape(-1, 7), y.reshape(-1)).backward()
    extra = torch.zeros_like(ref)
    mx, ids = ref.detach().max(-1, keepdim=True)
    extra.scatter_(-1, ids, mx * 1e-4 / 12)
    assert torch.allclose(logits.grad, ref.grad + extra, atol=1e-7)
    assert float(L2Wrap.apply(torch.tensor(2.0), logits).detach()) == 2.0


def test_dropout_only_in_training():
    m = _model()
    idx = torch.randint(0, 23, (2, 8))
    m.eval()
    assert torch.equal(m(idx), m(idx))
    m.train()
    torch.manual_seed(0)
    a = m(idx)
    torch.manual_seed(1)
    assert not torch.equal(a, m(idx))


def _reference_state_dict(m: SpikeGPT) -> dict:
    """The names and shapes of the reference's GPT.state_dict() (src/model.py), written out."""
    sd = {"emb.weight": m.emb.weight, "head.weight": m.head.weight,
          "ln_out.weight": m.ln_out.weight, "ln_out.bias": m.ln_out.bias,
          "blocks.0.ln0.weight": m.ln0.weight, "blocks.0.ln0.bias": m.ln0.bias}
    for i, b in enumerate(m.blocks):
        p = f"blocks.{i}."
        for ln in ("ln1", "ln2"):
            sd[p + ln + ".weight"] = getattr(b, ln).weight
            sd[p + ln + ".bias"] = getattr(b, ln).bias
        for n in ("time_decay", "time_first"):
            sd[p + "att." + n] = getattr(b.att, n)
        for n in ("time_mix_k", "time_mix_v", "time_mix_r"):
            sd[p + "att." + n] = getattr(b.att, n).reshape(1, 1, -1)
        for n in ("key", "value", "receptance", "output"):
            sd[p + f"att.{n}.weight"] = getattr(b.att, n).weight
        for n in ("time_mix_k", "time_mix_r"):
            sd[p + "ffn." + n] = getattr(b.ffn, n).reshape(1, 1, -1)
        for n in ("key", "receptance", "value"):
            sd[p + f"ffn.{n}.weight"] = getattr(b.ffn, n).weight
    return {k: v.detach().clone() for k, v in sd.items()}


def test_reference_checkpoint_converter(tmp_path):
    src = _model(V=17, L=3, C=16)
    ref = _reference_state_dict(src)
    assert ref["blocks.1.att.time_mix_k"].shape == (1, 1, 16)
    assert ref["blocks.2.ffn.value.weight"].shape == (16, 64)
    ours, kw = convert_reference_state_dict(ref, ctx_len=32)
    assert kw == dict(vocab_size=17, n_layer=3, n_embd=16, ctx_len=32, spiking=True)
    idx = torch.randint(0, 17, (2, 10))
    path = tmp_path / "ref.pth"
    torch.save({"module." + k: v for k, v in ref.items()}, path)  # accelerate/DDP prefix
    m = load_reference(path, ctx_len=32).eval()
    assert torch.equal(m(idx), src(idx))
    assert set(to_reference_state_dict(m)) == set(ref)
    bad = dict(ref, **{"blocks.0.ffnPre.key.weight": torch.zeros(64, 16)})
    with pytest.raises(ValueError, match=re.escape("'blocks.0.ffnPre.key.weight'")):
        convert_reference_state_dict(bad)
    bad = dict(ref, **{"head_q.weight": torch.zeros(4, 16)})
    with pytest.raises(ValueError, match="'head_q.weight'"):
        convert_reference_state_dict(bad)
    bad = {k: v for k, v in ref.items() if k != "blocks.1.att.time_first"}
    with pytest.raises(ValueError, match="missing key 'blocks.1.att.time_first'"):
        convert_reference_state_dict(bad)
    bad = dict(ref, **{"blocks.1.ffn.key.weight": torch.zeros(16, 16)})
    with pytest.raises(ValueError, match=r"'blocks.1.ffn.key.weight' has shape \(16, 16\)"):
        convert_reference_state_dict(bad)


def test_generate_greedy_matches_parallel():
    m = _model()
    prompt = [1, 5, 7]
    out = generate(m, prompt, 6, temperature=0)
    seq = list(prompt)
    for _ in range(6):
        with torch.no_grad():
            seq.append(int(m(torch.tensor([seq]))[0, -1].argmax()))
    assert out == seq[3:]
    g1 = generate(m, prompt, 8, top_p=0.8, generator=torch.Generator().manual_seed(3))
    g2 = generate(m, prompt, 8, top_p=0.8, generator=torch.Generator().manual_seed(3))
    assert g1 == g2 and len(g1) == 8


def _train(tmp_path, data, **extra):
    from spike.models.spikegpt.train import train_spikegpt

    return train_spikegpt(data=str(data), out=tmp_path / "gpt.pt", layers=2, embd=16, ctx_len=16, batch_size=4,
                          eval_every=2, eval_tokens=64, quiet=True, **extra)


def test_cli_train_resume_eval_generate(tmp_path, capsys):
    from spike.cli import main
    from spike.models.spikegpt.checkpoint import eval_checkpoint, generate_text
    from spike.train.checkpoint import load_checkpoint

    data = tmp_path / "text.txt"
    data.write_text("the quick brown fox jumps over the lazy dog. " * 40, encoding="utf-8")
    r = _train(tmp_path, data, iters=2)
    assert r["steps"] == 2 and r["test"]["tokens"] > 0 and r["unit"] == "character"
    ck = load_checkpoint(tmp_path / "gpt.pt")
    assert ck["step"] == 2 and ck["config"]["model"]["kind"] == "spikegpt"
    assert ck["config"]["text"]["vocab"]["kind"] == "chars"
    r = _train(tmp_path, data, iters=4, resume=True)
    assert r["steps"] == 4
    with pytest.raises(ValueError, match="trained on .*text.txt; name the text to score with --data"):
        eval_checkpoint(tmp_path / "gpt.pt")
    res = eval_checkpoint(tmp_path / "gpt.pt", data=data)
    assert res["kind"] == "chars" and 0 < res["bits"] < 10
    text = generate_text(tmp_path / "gpt.pt", "the ", 12, temperature=0.8, top_p=0.9, seed=1)
    assert len(text) == 12
    with pytest.raises(ValueError, match="different model"):
        _train(tmp_path, data, iters=4, resume=True, spiking=False)
    assert main(["eval", str(tmp_path / "gpt.pt"), "--data", str(data), "--max-tokens", "40"]) == 0
    assert main(["generate", str(tmp_path / "gpt.pt"), "--prompt", "the", "--tokens", "5"]) == 0
    outp = capsys.readouterr().out
    assert "test BPC" in outp
    ctx = ck["config"]["model"]["kwargs"]["ctx_len"]
    assert main(["eval", str(tmp_path / "gpt.pt"), "--ctx-len", str(ctx + 1)]) == 2  # a given option is honoured or refused
    assert f"the checkpoint's ctx_len is {ctx}, not {ctx + 1}" in capsys.readouterr().err


def test_cli_time_budget(tmp_path):
    data = tmp_path / "text.txt"
    data.write_text("abcdefgh " * 200, encoding="utf-8")
    r = _train(tmp_path, data, minutes=0.02, spiking=False)
    assert r["steps"] >= 1


def test_generate_and_eval_from_a_reference_checkpoint(tmp_path):
    import json

    from spike.models.spikegpt.checkpoint import eval_checkpoint, generate_text

    chars = sorted(set("abc de\n"))
    vocab = tmp_path / "vocab.json"
    vocab.write_text(json.dumps({str(i): c for i, c in enumerate(chars)}), encoding="utf-16")
    src = _model(V=len(chars), L=2, C=16)
    path = tmp_path / "trained-1.pth"
    torch.save(_reference_state_dict(src), path)
    text = generate_text(path, "ab", 7, temperature=0, vocab=vocab, ctx_len=32)
    assert len(text) == 7 and set(text) <= set(chars)
    data = tmp_path / "d.txt"
    data.write_text("abc de\n" * 30, encoding="utf-8")
    res = eval_checkpoint(path, data=data, vocab=vocab, ctx_len=32)
    assert res["tokens"] > 0 and math.isfinite(res["bits"])
    with pytest.raises(ValueError, match="vocab"):
        generate_text(path, "ab", 3, ctx_len=32)  # built-in corpus vocabulary: wrong size
    with pytest.raises(ValueError, match="does not record its context length: give ctx_len"):
        eval_checkpoint(path, data=data, vocab=vocab)  # windows need the trained context
    assert generate_text(path, "ab", 7, temperature=0, vocab=vocab) == text  # token by token: any context
