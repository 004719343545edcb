"""SpikeGPT compiled to the IR: token-by-token runs on numba and torch equal PyTorch's RNN mode
(same spikes, logits within 1e-4; in fact identical), counts follow from the recorded values,
the report's three conventions follow from the counts, and the CLI compiles and runs it."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from spike.backends import run
from spike.compiler import compile as compile_model
from spike.models.spikegpt.lowering import lower_spikegpt
from spike.compiler.ir.nodes import HostOp, Input, Output
from spike.compiler.ir.program import ProgramBuilder, ProgramError
from spike.compiler.ir.validate import validate_program
from spike.models.spikegpt.model import build_spikegpt, lm_loss
from helpers.reports import validated

V = 13


def _model(spiking: bool = True, seed: int = 0, n_embd: int = 16):
    torch.manual_seed(seed)
    m = build_spikegpt("tiny", vocab_size=V, n_layer=2, n_embd=n_embd, spiking=spiking).eval()
    with torch.no_grad():  # random weights rarely reach the threshold: scale the LIF inputs up
        for blk in m.blocks:
            blk.att.output.weight.mul_(20)
            blk.ffn.value.weight.mul_(40)
    return m


def _one_hot(ids: np.ndarray, vocab: int) -> np.ndarray:
    T, B = ids.shape
    x = np.zeros((T, B, vocab), np.float32)
    x[np.arange(T)[:, None], np.arange(B)[None], ids] = 1
    return x


def _rnn(model, ids: np.ndarray):
    """Logits [T, B, V] and spikes {name: [T, B, C]} of SpikeGPT.step, token by token."""
    state, logits, recs = None, [], []
    for t in range(ids.shape[0]):
        rec: dict = {}
        lg, state = model.step(torch.from_numpy(ids[t]), state, record=rec)
        logits.append(lg.numpy())
        recs.append(rec)
    spikes = {k: np.stack([r[k].numpy() for r in recs]) for k in recs[0]}
    return np.stack(logits), spikes


def _spike_probes(program) -> dict[str, str]:
    """RNN-mode record key -> program node."""
    layers = program.metadata["layers"]
    out = {"emb": layers["emb"]} if layers["emb"] else {}
    for names in (layers["sn1"], layers["sn2"]):
        out.update({n: n for n in names})
    return out


def _check_equal(model, program, ids, backend):
    ref_logits, ref_spikes = _rnn(model, ids)
    probes = _spike_probes(program)
    res = run(program, _one_hot(ids, model.vocab_size), backend=backend, probes=list(probes.values()))
    got = res.outputs["logits"]
    assert np.abs(got - ref_logits).max() <= 1e-4
    assert np.array_equal(got, ref_logits)  # each host op is the same torch call on the same shapes
    for key, node in probes.items():
        assert np.array_equal(res.probes[node], ref_spikes[key]), key
    return res, ref_spikes


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_program_equals_rnn_mode(backend):
    model = _model()
    program = lower_spikegpt(model)
    validate_program(program)
    ids = np.random.default_rng(1).integers(0, V, (24, 3))
    res, spikes = _check_equal(model, program, ids, backend)
    for key, s in spikes.items():  # every spiking layer fires, and not always
        assert 0 < s.mean() < 1, key


def test_no_spikes_program_equals_rnn_mode():
    model = _model(spiking=False)
    program = lower_spikegpt(model)
    assert not any(n.endswith(("sn1", "sn2")) or n == "emb_spike" for n in program.graph)
    _check_equal(model, program, np.random.default_rng(2).integers(0, V, (12, 2)), "numba")


def test_trained_model_program_equals_rnn_mode():
    from spike.models.spikegpt.text import load_corpus, random_windows

    corpus = load_corpus()
    torch.manual_seed(0)
    m = build_spikegpt("tiny", corpus.vocab.size, n_layer=2, n_embd=32, ctx_len=32)
    opt = torch.optim.Adam(m.parameters(), lr=3e-3, betas=(0.9, 0.99), eps=4e-9)
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        x, y = random_windows(corpus.train, 32, 8, g)
        loss = lm_loss(m(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    m.eval()
    ids = corpus.valid[:48].astype(np.int64).reshape(48, 1)
    res, spikes = _check_equal(m, compile_model(m, target="cmos45nm_fp32"), ids, "numba")
    assert sum(s.sum() for k, s in spikes.items() if ".sn" in k) > 0


def test_counts_follow_from_recorded_values():
    model = _model()
    program = lower_spikegpt(model)
    C, T, B = model.n_embd, 10, 2
    ids = np.random.default_rng(3).integers(0, V, (T, B))
    probes = ["blocks.0.sn1", "blocks.1.sn2", "blocks.0.ffn.act", "blocks.1.ln1", "emb_spike"]
    res = run(program, _one_hot(ids, V), probes=probes)
    ops = res.ops.per_node
    nz_emb = np.count_nonzero(model.emb.weight.detach().numpy(), axis=1)  # weights of each token's row
    np.testing.assert_array_equal(ops["emb"]["syn_ops"], nz_emb[ids].sum(0))
    np.testing.assert_array_equal(ops["emb"]["dense_ops"], [T * V * C] * B)
    # the residual add charges one accumulate per spike of its spiking operand, nothing else
    np.testing.assert_array_equal(ops["blocks.0.add1"]["syn_ops"], res.probes["blocks.0.sn1"].sum((0, 2)))
    np.testing.assert_array_equal(ops["blocks.1.add2"]["syn_ops"], res.probes["blocks.1.sn2"].sum((0, 2)))
    assert ops["blocks.0.add1"]["host_flops"].tolist() == [0] * B
    # a matmul: non-zero inputs x non-zero weights (relu^2 leaves zeros) and all pairs
    act = res.probes["blocks.0.ffn.act"].reshape(T, B, -1)
    w = model.blocks[0].ffn.value.weight.detach().numpy()
    want = (np.count_nonzero(act, axis=0) @ np.count_nonzero(w, axis=0))
    np.testing.assert_array_equal(ops["blocks.0.ffn.value"]["macs"], want)
    assert want.min() < T * 4 * C * C  # some inputs were zero: not a dense count
    np.testing.assert_array_equal(ops["blocks.0.ffn.value"]["dense_ops"], [T * C * 4 * C] * B)
    # element-wise host ops: flops per element x elements x steps
    assert ops["blocks.1.att.wkv"]["host_flops"].tolist() == [23 * C * T] * B
    assert ops["blocks.1.ln1"]["host_flops"].tolist() == [7 * C * T] * B
    np.testing.assert_array_equal(ops["emb_spike"]["spikes"], res.probes["emb_spike"].sum((0, 2)))


def test_saved_program_runs_identically(tmp_path):
    from spike.compiler.io.hdf5 import assert_programs_equal, load_program, save_program

    program = lower_spikegpt(_model())
    save_program(program, tmp_path / "gpt.h5")
    again = load_program(tmp_path / "gpt.h5")
    assert_programs_equal(program, again)
    x = _one_hot(np.random.default_rng(4).integers(0, V, (8, 1)), V)
    assert np.array_equal(run(program, x).outputs["logits"], run(again, x).outputs["logits"])


def test_compile_refuses_what_spikegpt_cannot_be():
    model = _model()
    with pytest.raises(ValueError, match="fixed-point"):
        compile_model(model, precision="fixed")
    with pytest.raises(ValueError, match="loihi2.*host target"):
        compile_model(model, target="loihi2")


def _hostop_program(node: HostOp, n_sources: int = 1, in_size: int = 4):
    b = ProgramBuilder()
    srcs = [b.add(f"in{i}", Input(shape=(in_size,), signal="real")) for i in range(n_sources)]
    b.add("h", node, srcs)
    b.add("out", Output(shape=node.shape), "h")
    return b


def test_host_op_validation_names_node_and_field():
    w = np.ones((3, 4), np.float32)
    validate_program(_hostop_program(HostOp(shape=(3,), op="matmul", weight=w)).build())
    with pytest.raises(ProgramError, match=r"node 'h' \(hostop\), field weight: expects 4 inputs"):
        validate_program(_hostop_program(HostOp(shape=(3,), op="matmul", weight=w), in_size=5).build())
    with pytest.raises(ProgramError, match="field op: unknown host op 'softmax'"):
        validate_program(_hostop_program(HostOp(shape=(4,), op="softmax")).build())
    with pytest.raises(ProgramError, match="field weight: required by host op 'layernorm'"):
        validate_program(_hostop_program(HostOp(shape=(4,), op="layernorm", bias=np.zeros(4))).build())
    with pytest.raises(ProgramError, match="needs exactly two sources"):
        validate_program(_hostop_program(HostOp(shape=(4,), op="wkv", weight=np.zeros(4), bias=np.zeros(4))).build())
    with pytest.raises(ProgramError, match="field weight: contains 4 NaN/inf"):
        validate_program(_hostop_program(HostOp(shape=(4,), op="token_mix", weight=np.full(4, np.nan))).build())


def test_stepwise_refuses_gates():
    from spike.backends import BackendError
    from spike.compiler.ir.nodes import Conv2d, Gate, Population

    b = ProgramBuilder()
    b.add("in", Input(shape=(2, 4, 4)))
    b.add("conv", Conv2d(shape=(2, 4, 4), in_shape=(2, 4, 4), weight=np.ones((2, 2, 1, 1), np.float32)), "in")
    b.add("g", Gate(shape=(2,), in_shape=(2, 4, 4), weight=np.ones((2, 2), np.float32), bias=np.zeros(2, np.float32)),
          "in")
    b.add("p", Population(shape=(2, 4, 4)), ["conv", "g"])
    b.add("out", Output(shape=(2, 4, 4)), "p")
    with pytest.raises(BackendError, match="not causal"):
        run(b.build(), np.ones((2, 1, 2, 4, 4), np.float32), stepwise=True)


def test_report_follows_from_the_counts():
    from spike.models.spikegpt.report import spikegpt_report, vanilla_gpt_macs

    model = _model()
    program = lower_spikegpt(model)
    T, C, L = 16, model.n_embd, model.n_layer
    ids = np.random.default_rng(5).integers(0, V, (T, 1))
    res = run(program, _one_hot(ids, V), probes=["blocks.0.sn1", "blocks.0.sn2", "blocks.1.sn1"])
    rep = spikegpt_report(program, res, token_ids=ids)
    rates = {r["node"]: r["rate"] for r in rep.firing}
    assert rates["blocks.0.sn1"] == pytest.approx(res.probes["blocks.0.sn1"].mean())
    assert set(rates) == {"emb_spike"} | {f"blocks.{i}.sn{j}" for i in range(L) for j in (1, 2)}
    # the paper's convention: block projections at the rate of the spiking layer feeding them
    att = (4 * C * C) * (rates["emb_spike"] + rates["blocks.0.sn2"])
    ffn = (4 * C * C + 4 * C * C + C * C) * (rates["blocks.0.sn1"] + rates["blocks.1.sn1"])
    other_syn = sum(float(res.ops.per_node[n]["syn_ops"].sum()) for n in
                    ("emb", "blocks.0.add1", "blocks.0.add2", "blocks.1.add1", "blocks.1.add2")) / T
    assert rep.paper["syn_ops"] == pytest.approx(att + ffn + other_syn)
    head_macs = float(res.ops.per_node["head"]["macs"].sum()) / T
    assert rep.paper["macs"] == pytest.approx(head_macs + rep.executed["host_flops"])
    assert rep.vanilla["macs"] == vanilla_gpt_macs(L, C, T, V) == L * (12 * C * C + T * C) + V * C
    assert rep.energy_pj["vanilla_gpt"] == pytest.approx(4.6 * rep.vanilla["macs"])
    assert rep.energy_pj["paper_convention"] == pytest.approx(0.9 * rep.paper["syn_ops"] + 4.6 * rep.paper["macs"])
    logp = torch.log_softmax(torch.from_numpy(res.outputs["logits"][:-1, 0]).double(), -1)
    want_bits = -float(logp[torch.arange(T - 1), torch.from_numpy(ids[1:, 0])].mean()) / np.log(2)
    assert rep.bits_per_token == pytest.approx(want_bits, rel=1e-9)
    text = rep.table()
    assert "paper's convention" in text and "vanilla GPT" in text and "32.2x" in text
    json.dumps(rep.to_json())


def test_cli_compile_and_run(tmp_path, capsys):
    from spike.cli import main

    data = tmp_path / "text.txt"
    data.write_text("the quick brown fox jumps over the lazy dog. " * 60, encoding="utf-8")
    ckpt, prog = tmp_path / "gpt.pt", tmp_path / "gpt.h5"
    assert main(["train", "spikegpt", "--size", "tiny", "--layers", "2", "--embd", "16", "--ctx-len", "16",
                 "--iters", "2", "--data", str(data), "--out", str(ckpt), "--quiet"]) == 0
    assert main(["compile", str(ckpt), "--target", "cmos45nm_fp32", "--out", str(prog)]) == 0
    out_json = tmp_path / "report.json"
    assert main(["run", str(prog), "--data", str(data), "--tokens", "40", "--json", str(out_json),
                 "--plot", str(tmp_path / "r.png")]) == 0
    text = capsys.readouterr().out
    assert "firing rate" in text and "block 1 SN2" in text and "paper's convention" in text
    rep = validated(out_json)  # the schema every `spike run` writes; SpikeGPT's figures in its model section
    assert rep["data"]["tokens"] == 40 and rep["steps"] == 40 and rep["bits_per_token"] > 0
    assert rep["model"]["kind"] == "spikegpt" and rep["model"]["per_token"]["executed"]["macs"] > 0
    assert rep["ops"]["total"]["macs"] == pytest.approx(40 * rep["model"]["per_token"]["executed"]["macs"])
    assert rep["model"]["energy_pj_per_token"]["vanilla_gpt"] > 0 and (tmp_path / "r.png").stat().st_size > 0
    assert main(["compile", str(ckpt), "--target", "loihi2", "--out", str(tmp_path / "x.h5")]) == 2
