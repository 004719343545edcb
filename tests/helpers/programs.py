"""IR programs built node by node (``ProgramBuilder``) for the backend tests, each returned with an
input ``[T, B, ...]``. A builder draws its weights and real input values from ``FLOATS``
(arbitrary float32: the sums depend on their order, so equality shows the same order) or
``DYADIC`` (multiples of 2^-8 and 1/4: exact in any order, for references that add otherwise);
the ``loihi_*`` programs are float32 programs made to be quantised for Loihi. ``edited`` changes a
saved program file on purpose."""
from __future__ import annotations

import contextlib
from typing import Iterator

import h5py
import numpy as np

from spike.compiler.io.hdf5 import seal_program_file
from spike.compiler.ir.nodes import (
    Conv2d, Dense, Gate, HostOp, Identity, Input, Output, Pool2d, Population, Sparse,
)
from spike.compiler.ir.program import Program, ProgramBuilder

KEYS = ("syn_ops", "macs", "dense_ops", "pool_ops", "neuron_updates", "spikes", "host_flops")
VARIANT_FIELDS = ("model", "reset", "reset_delay", "fire_ge")
# every neuron variant of the LIF family, as VARIANT_FIELDS
NEURON_VARIANTS = (
    ("lif", "subtract", True, False),
    ("lif", "zero", True, True),
    ("lif", "none", True, False),
    ("lif", "subtract", False, True),
    ("lif", "zero", False, False),
    ("if", "none", False, False),
    ("cuba_lif", "subtract", True, False),
    ("cuba_lif", "zero", False, True),
    ("li", "none", True, False),
)


class _Floats:
    """Arbitrary float32 numbers (not dyadic)."""

    @staticmethod
    def weights(rng: np.random.Generator, shape, scale: float = 0.5) -> np.ndarray:
        """Normal weights of standard deviation ``scale``, some exact zeros."""
        w = (rng.standard_normal(shape) * scale).astype(np.float32)
        w[rng.random(shape) < 0.15] = 0
        return w

    @staticmethod
    def values(rng: np.random.Generator, shape) -> np.ndarray:
        """Real input values: normal, half of them 0, some exactly 1."""
        x = rng.standard_normal(shape).astype(np.float32)
        x[rng.random(shape) < 0.5] = 0
        x[rng.random(shape) < 0.1] = 1
        return x


class _Dyadic:
    """Dyadic numbers: every float sum of them is exact, in any order."""

    @staticmethod
    def weights(rng: np.random.Generator, shape, scale: float = 0.5) -> np.ndarray:
        """Multiples of 2^-8 up to about ``3 * scale / 8`` in magnitude."""
        k = round(96 * scale)
        return (rng.integers(-k, k + 1, size=shape) / 256.0).astype(np.float32)

    @staticmethod
    def values(rng: np.random.Generator, shape) -> np.ndarray:
        """Real input values in quarters from 0 to 1."""
        return (rng.integers(0, 5, size=shape) / 4.0).astype(np.float32)


FLOATS, DYADIC = _Floats(), _Dyadic()


def spikes(rng: np.random.Generator, T: int, B: int, shape, p: float = 0.3) -> np.ndarray:
    return (rng.random((T, B, *shape)) < p).astype(np.float32)


def pop(rng, shape, model="lif", reset="subtract", reset_delay=True, fire_ge=False, gain=1.0, **forms) -> Population:
    """A population with random per-neuron beta, threshold (and alpha, tau or rate where its model
    or charge ``forms["charge"]`` has one); ``forms``: further fields (``spike.semantics``)."""
    n = int(np.prod(shape))
    charge = forms.get("charge", "beta")
    if charge in ("tau", "tau_input") or model == "alpha":
        forms["tau"] = rng.uniform(1.5, 4.0, n).astype(np.float32)
    if charge in ("rate", "rate_input"):
        forms["rate"] = rng.uniform(0.2, 0.7, n).astype(np.float32)
    return Population(
        shape=tuple(shape),
        model=model,
        beta=(np.ones(n) if model == "if" else rng.uniform(0.5, 0.95, n)).astype(np.float32),
        threshold=rng.uniform(0.25, 0.75, n).astype(np.float32),
        alpha=rng.uniform(0.3, 0.8, n).astype(np.float32) if model in ("cuba_lif", "alpha") else None,
        gain=gain,
        reset=reset,
        reset_delay=reset_delay,
        fire_ge=fire_ge,
        **forms,
    )


def csr(w: np.ndarray, dtype: type = np.float32) -> dict[str, np.ndarray]:
    """``Sparse`` fields of the non-zero entries of ``w`` ``[n_out, n_in]``, in row (source) order,
    the weights in ``dtype``."""
    n = w.shape[1]
    return dict(indptr=np.concatenate([[0], np.cumsum((w != 0).sum(0))]),
                indices=np.concatenate([np.nonzero(w[:, i])[0] for i in range(n)]),
                data=np.concatenate([w[w[:, i] != 0, i] for i in range(n)]).astype(dtype))


# ----------------------------------------------------------------------------- programs


def mlp(rng, num=FLOATS, sizes=(40, 36, 6), steps=8, batch=2):
    """Dense with bias, a delay-2 projection with zero columns, LI readout; spike input."""
    n_in, n_hid, n_out = sizes
    b = ProgramBuilder()
    b.add("in", Input(shape=(n_in,)))
    b.add("fc1", Dense(shape=(n_hid,), in_shape=(n_in,), weight=num.weights(rng, (n_hid, n_in)),
                       bias=num.weights(rng, n_hid, 0.2)), "in")
    b.add("p1", pop(rng, (n_hid,)), "fc1")
    w2 = num.weights(rng, (n_out, n_hid))
    w2[:, :3] = 0  # columns without synapses: no syn_ops
    b.add("fc2", Dense(shape=(n_out,), in_shape=(n_hid,), weight=w2, delay=2), "p1")
    b.add("p2", pop(rng, (n_out,), model="li"), "fc2")
    b.add("out", Output(shape=(n_out,)), "p2")
    return b.build(), spikes(rng, steps, batch, (n_in,), 0.3)


def one_layer(rng, population: Population, n_in: int):
    """``Input(n_in) -> Dense (dyadic weights, gain 2) -> population -> Output``."""
    n_out = int(np.prod(population.shape))
    b = ProgramBuilder()
    b.add("in", Input(shape=(n_in,)))
    b.add("fc", Dense(shape=(n_out,), in_shape=(n_in,), weight=DYADIC.weights(rng, (n_out, n_in), 2.0)), "in")
    b.add("p", population, "fc")
    b.add("out", Output(shape=(n_out,)), "p")
    return b.build()


def real_input(rng, num=FLOATS):
    """Real-valued input: MACs, products by the input values (conv with bias, dense with delay 1)."""
    b = ProgramBuilder()
    b.add("in", Input(shape=(2, 5, 5), signal="real"))
    b.add("conv", Conv2d(shape=(3, 5, 5), in_shape=(2, 5, 5), weight=num.weights(rng, (3, 2, 3, 3)),
                         bias=num.weights(rng, 3, 0.1), padding=(1, 1)), "in")
    b.add("fc", Dense(shape=(20,), in_shape=(50,), weight=num.weights(rng, (20, 50)), delay=1), "in")
    b.add("p", pop(rng, (3, 5, 5)), "conv")
    b.add("q", pop(rng, (20,), model="cuba_lif"), "fc")
    b.add("out", Output(shape=(3, 5, 5)), "p")
    b.add("out2", Output(shape=(20,)), "q")
    return b.build(), num.values(rng, (5, 2, 2, 5, 5))


def mixed_input(rng, num=FLOATS, gate=True, steps=6, batch=3):
    """A real-valued input that is real on some (step, sample)s (in channel 0 only) and 0/1 or
    -1/0/1 events on the others: syn_ops or macs decided per (sample, step) by dense, sparse, conv,
    identity and a grouped conv; ``gate``: the grouped conv gated, its kept channels reading only
    channel 1 (group 0 fully masked: the step's real values lie where nothing is delivered)."""
    C, H, W = 2, 4, 5
    n = C * H * W
    b = ProgramBuilder()
    b.add("in", Input(shape=(C, H, W), signal="real"))
    b.add("fc", Dense(shape=(7,), in_shape=(n,), weight=num.weights(rng, (7, n)), bias=num.weights(rng, 7, 0.1)), "in")
    b.add("sp", Sparse(shape=(5,), in_shape=(n,), **csr(num.weights(rng, (5, n))), delay=1), "in")
    b.add("conv", Conv2d(shape=(3, H, W), in_shape=(C, H, W), weight=num.weights(rng, (3, C, 3, 3)), padding=(1, 1),
                         delay=2), "in")
    b.add("id", Identity(shape=(C, H, W), in_shape=(C, H, W), scale=0.5), "in")
    b.add("gconv", Conv2d(shape=(4, H, W), in_shape=(C, H, W), weight=num.weights(rng, (4, 1, 3, 3)), padding=(1, 1),
                          groups=2), "in")
    if gate:
        b.add("gate", Gate(shape=(4,), in_shape=(C, H, W), weight=np.zeros((4, C), np.float32),
                           bias=np.array([-1, -1, 1, 1], np.float32)), "in")
    b.add("gp", pop(rng, (4, H, W)), ["gconv", "gate"] if gate else "gconv")
    b.add("o_g", Output(shape=(4, H, W)), "gp")
    for name, shape in (("fc", (7,)), ("sp", (5,)), ("conv", (3, H, W)), ("id", (C, H, W))):
        b.add(f"p_{name}", pop(rng, shape), name)
        b.add(f"o_{name}", Output(shape=shape), f"p_{name}")
    kind = rng.integers(0, 3, size=(steps, batch))  # 0: real values, 1: 0/1 events, 2: -1/0/1 events
    kind[:3] = (np.arange(3)[:, None] + np.arange(batch)) % 3  # every sample: each kind in its first 3 steps
    ev = spikes(rng, steps, batch, (C, H, W), 0.4)
    ev = np.where(kind[:, :, None, None, None] == 2, ev * np.where(rng.random(ev.shape) < 0.5, -1, 1), ev)
    real = ev.copy()
    real[:, :, 0] = num.values(rng, (steps, batch, H, W))
    x = np.where(kind[:, :, None, None, None] == 0, real, ev).astype(np.float32)
    return b.build(), x


def conv_pool(rng, mode: str, stride, padding, groups, kernel, num=FLOATS, steps=5):
    """Conv (bias, zero weights) -> population -> pooling ``mode`` (delay 1) -> population."""
    C, H, W, C_out = 2, 7, 8, 4
    Ho = (H + 2 * padding[0] - kernel[0]) // stride[0] + 1
    Wo = (W + 2 * padding[1] - kernel[1]) // stride[1] + 1
    w = num.weights(rng, (C_out, C // groups, *kernel))
    w[1, 0, 0, :] = 0  # zero weights: not counted as pairs
    b = ProgramBuilder()
    b.add("in", Input(shape=(C, H, W)))
    b.add("conv", Conv2d(shape=(C_out, Ho, Wo), in_shape=(C, H, W), weight=w, bias=num.weights(rng, C_out, 0.1),
                         stride=stride, padding=padding, groups=groups), "in")
    b.add("p1", pop(rng, (C_out, Ho, Wo)), "conv")
    Po, Qo = (Ho + 2 - 2) // 2 + 1, (Wo + 2 - 3) // 1 + 1  # kernel (2, 3), stride (2, 1), padding (1, 1)
    b.add("pool", Pool2d(shape=(C_out, Po, Qo), in_shape=(C_out, Ho, Wo), mode=mode, kernel=(2, 3),
                         stride=(2, 1), padding=(1, 1), delay=1), "p1")
    b.add("p2", pop(rng, (C_out, Po, Qo), gain=0.75), "pool")
    b.add("out", Output(shape=(C_out, Po, Qo)), "p2")
    return b.build(), spikes(rng, steps, 2, (C, H, W), 0.3)


def recurrent(rng, num=FLOATS, n=20, steps=8):
    """A population driving itself through a delay-1 dense projection (stepped per step)."""
    b = ProgramBuilder()
    b.add("in", Input(shape=(8,)))
    b.add("fc", Dense(shape=(n,), in_shape=(8,), weight=num.weights(rng, (n, 8), 1.0)), "in")
    b.add("p", pop(rng, (n,)), "fc")
    b.add("rec", Dense(shape=(n,), in_shape=(n,), weight=num.weights(rng, (n, n), 0.5), delay=1), "p")
    b.connect("rec", "p")
    b.add("ro", Dense(shape=(3,), in_shape=(n,), weight=num.weights(rng, (3, n))), "p")
    b.add("li", pop(rng, (3,), model="li"), "ro")
    b.add("out", Output(shape=(3,)), "li")
    prog = b.build()
    assert any(stage.cyclic for stage in prog.schedule())
    return prog, spikes(rng, steps, 2, (8,), 0.3)


def residual(rng, num=FLOATS, n=18, steps=6, batch=2):
    """Identity (scale 1 and 0.3) into a population with three sources, host add of three."""
    b = ProgramBuilder()
    b.add("in", Input(shape=(n,)))
    b.add("fc1", Dense(shape=(n,), in_shape=(n,), weight=num.weights(rng, (n, n), 0.8)), "in")
    b.add("a", pop(rng, (n,)), "fc1")
    b.add("fc2", Dense(shape=(n,), in_shape=(n,), weight=num.weights(rng, (n, n), 0.8)), "a")
    b.add("res", Identity(shape=(n,), in_shape=(n,)), "a")
    b.add("half", Identity(shape=(n,), in_shape=(n,), scale=0.3, delay=1), "in")
    b.add("c", pop(rng, (n,), reset="zero"), ["fc2", "res", "half"])
    b.add("sum", HostOp(shape=(n,), op="add"), ["a", "c", "in"])
    b.add("out", Output(shape=(n,)), "sum")
    return b.build(), spikes(rng, steps, batch, (n,), 0.4)


def neurons(rng, num=FLOATS, variants=NEURON_VARIANTS, scale=0.6, gain=0.75, late=False, steps=8, batch=2, p=0.4):
    """Populations ``p0, p1, ...`` of the ``variants`` (``(model, reset, reset_delay, fire_ge)`` or a
    dict of population fields), each fed by a dense projection and a scaled identity (summed in
    source order); ``late``: also one that adds its recurrent input after its charge (snnTorch's
    RLeaky)."""
    b = ProgramBuilder()
    b.add("in", Input(shape=(10,)))
    b.add("fc", Dense(shape=(10,), in_shape=(10,), weight=num.weights(rng, (10, 10), scale)), "in")
    b.add("id", Identity(shape=(10,), in_shape=(10,), scale=0.5), "in")
    for k, variant in enumerate(variants):
        fields = variant if isinstance(variant, dict) else dict(zip(VARIANT_FIELDS, variant))
        b.add(f"p{k}", pop(rng, (10,), gain=gain, **fields), ["fc", "id"])
        b.add(f"out{k}", Output(shape=(10,)), f"p{k}")
    if late:
        b.add("late", pop(rng, (10,), reset="drop", late_recurrent=True, reset_rule="snntorch"), ["fc"])
        b.add("rec", Dense(shape=(10,), in_shape=(10,), weight=num.weights(rng, (10, 10), 0.6),
                           bias=num.weights(rng, 10, 0.2), delay=1), "late")
        b.connect("rec", "late")
        b.add("out_late", Output(shape=(10,)), "late")
    return b.build(), spikes(rng, steps, batch, (10,), p)


def sparse(rng, num=FLOATS, sizes=(20, 18), duplicate=True, steps=6, batch=2):
    """CSR with bias, delay 1 and an explicitly stored zero weight (not a synaptic op);
    ``duplicate``: a row naming one target twice (its two terms add in CSR order)."""
    n_in, n_out = sizes
    dense = num.weights(rng, (n_out, n_in)) * (rng.random((n_out, n_in)) < 0.4)
    indptr, indices, data = [0], [], []
    for i in range(n_in):
        rows = np.nonzero(dense[:, i])[0]
        indices += rows.tolist()
        data += dense[rows, i].tolist()
        if i == 3:
            indices.append(0)
            data.append(0.0)
        if i == 5 and duplicate:
            indices += [2, 2]
            data += [0.3, -0.7]
        indptr.append(len(indices))
    b = ProgramBuilder()
    b.add("in", Input(shape=(n_in,)))
    b.add("sp", Sparse(shape=(n_out,), in_shape=(n_in,), indptr=np.array(indptr), indices=np.array(indices),
                       data=np.array(data, np.float32), bias=num.weights(rng, n_out, 0.1), delay=1), "in")
    b.add("p", pop(rng, (n_out,)), "sp")
    b.add("out", Output(shape=(n_out,)), "p")
    return b.build(), spikes(rng, steps, batch, (n_in,), 0.4)


def sigmoid_program(rng, num=FLOATS) -> Program:
    """Dense -> a sigmoid host op (which a backend may not have) -> output."""
    b = ProgramBuilder()
    b.add("in", Input(shape=(4,)))
    b.add("fc", Dense(shape=(4,), in_shape=(4,), weight=num.weights(rng, (4, 4))), "in")
    b.add("sig", HostOp(shape=(4,), op="sigmoid"), "fc")
    b.add("out", Output(shape=(4,)), "sig")
    return b.build()


# ----------------------------------------------------------------------------- for Loihi


def normal(rng: np.random.Generator, shape, scale: float = 0.5) -> np.ndarray:
    return rng.normal(0, scale, shape).astype(np.float32)


def loihi_pop(rng, shape, model="lif", **kw) -> Population:
    """A population Loihi's neurons compute (reset to zero in the step that fires), random beta, one
    threshold; ``li``: a leaky readout of beta 0.75."""
    if model == "li":
        return Population(shape=shape, model="li", beta=np.float32(0.75))
    n = int(np.prod(shape))
    extra = {"alpha": rng.uniform(0, 1, n).astype(np.float32)} if model == "cuba_lif" else {}
    return Population(shape=shape, model=model, beta=rng.uniform(0.5, 1.0, n).astype(np.float32),
                      threshold=np.float32(rng.uniform(0.5, 1.5)), reset="zero", reset_delay=False, **extra, **kw)


def conv_stack(weight, bias, pop, **p2) -> ProgramBuilder:
    """in ``[2, 8, 8]`` -> conv (bias) -> p1 -> max pool "mp" -> grouped conv -> cuba_lif p2 (``p2``: its
    further fields) -> average pool "ap" -> p3 ``[6, 2, 2]``; ``weight(shape)``, ``bias(shape)`` and
    ``pop(shape, model=...)`` draw the weights and populations, in this order."""
    b = ProgramBuilder()
    b.add("in", Input(shape=(2, 8, 8)))
    b.add("c1", Conv2d(shape=(4, 8, 8), in_shape=(2, 8, 8), weight=weight((4, 2, 3, 3)), bias=bias(4), padding=(1, 1)),
          "in")
    b.add("p1", pop((4, 8, 8)), "c1")
    b.add("mp", Pool2d(shape=(4, 4, 4), in_shape=(4, 8, 8), mode="max", kernel=(2, 2), stride=(2, 2)), "p1")
    b.add("c2", Conv2d(shape=(6, 4, 4), in_shape=(4, 4, 4), weight=weight((6, 2, 3, 3)), padding=(1, 1), groups=2),
          "mp")
    b.add("p2", pop((6, 4, 4), model="cuba_lif", **p2), "c2")
    b.add("ap", Pool2d(shape=(6, 2, 2), in_shape=(6, 4, 4), mode="avg", kernel=(2, 2), stride=(2, 2)), "p2")
    b.add("p3", pop((6, 2, 2)), "ap")
    return b


def loihi_cnn(seed: int):
    """conv -> lif -> max pool -> grouped conv (weight_exp < 0 on Loihi: lowered as Sparse) -> cuba
    -> avg pool (a depthwise conv after quantize) -> lif -> dense -> li: (program, input shape,
    the names to record)."""
    rng = np.random.default_rng(seed)
    b = conv_stack(lambda shape: normal(rng, shape), lambda shape: normal(rng, shape, 0.1),
                   lambda shape, **kw: loihi_pop(rng, shape, **kw))
    b.add("fc", Dense(shape=(5,), in_shape=(24,), weight=normal(rng, (5, 24)), bias=normal(rng, 5, 0.2)), "p3")
    b.add("ro", loihi_pop(rng, (5,), "li"), "fc")
    b.add("out", Output(shape=(5,)), "ro")
    return b.build({"precision": "float32"}), (2, 8, 8), ["p1", "mp", "p2", "p3", "ro"]


def loihi_recurrent(seed: int, delay: int = 0):
    """Sparse (bias) -> pop with a recurrent dense (delay 1); from pop a dense (``delay``) -> cuba_lif
    pop2 and two identities (scales 1.5 with ``delay``, -0.25) -> pop3: (program, input shape, the
    populations)."""
    rng = np.random.default_rng(seed)
    n_in, n = 40, 24
    b = ProgramBuilder()
    b.add("in", Input(shape=(n_in,)))
    mask = rng.random((n_in, n)) < 0.3
    rows, cols = np.nonzero(mask)
    indptr = np.concatenate([[0], np.cumsum(mask.sum(1))]).astype(np.int64)
    b.add("sp", Sparse(shape=(n,), in_shape=(n_in,), indptr=indptr, indices=cols.astype(np.int64),
                       data=normal(rng, len(cols), 0.6), bias=normal(rng, n, 0.05)), "in")
    b.add("pop", loihi_pop(rng, (n,)), "sp")
    b.add("rec", Dense(shape=(n,), in_shape=(n,), weight=normal(rng, (n, n), 0.3), delay=1), "pop")
    b.connect("rec", "pop")
    b.add("id", Identity(shape=(n,), in_shape=(n,), scale=1.5, delay=delay), "pop")
    b.add("fc", Dense(shape=(8,), in_shape=(n,), weight=normal(rng, (8, n)), delay=delay), "pop")
    b.add("pop2", loihi_pop(rng, (8,), model="cuba_lif"), "fc")
    b.add("id2", Identity(shape=(n,), in_shape=(n,), scale=-0.25), "pop")
    b.add("pop3", loihi_pop(rng, (n,)), ["id", "id2"])
    b.add("out", Output(shape=(8,)), "pop2")
    b.add("out3", Output(shape=(n,)), "pop3")
    return b.build({"precision": "float32"}), (n_in,), ["pop", "pop2", "pop3"]


@contextlib.contextmanager
def edited(path) -> Iterator[h5py.File]:
    """A saved program file opened with h5py to be changed on purpose, re-sealed afterwards
    (:func:`spike.compiler.io.hdf5.seal_program_file`) so that loading reads what was changed."""
    with h5py.File(path, "r+") as f:
        yield f
    seal_program_file(path)
