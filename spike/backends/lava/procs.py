"""Our Lava processes: host ops and FTWT gates run as custom Lava Python processes (design brief §6).

Imported by ``lava.build`` only after :func:`spike.compat.lava.ensure_lava` (this module imports
lava at the top). The lava backend maps each process to its model explicitly (Lava's
``exception_proc_model_map``, keyed by process instance), so Lava's compiler never scans this
folder for process models.

``HostAdd`` is the IR's ``add`` host op: Lava sums the messages of every connection into one
``InPort`` (in connection order, the IR's source order), which is exactly the element-wise sum, so
one input port serves any number of operands. It receives and sends in the same step (a host op
has no delay, as in the IR) and records what it sent in ``data`` (a ring buffer over time, last
axis), so that no sink process is needed to read it.

``FTWTGate`` is the IR's ``Gate`` head: its ``a_in`` receives the gate source's output at every
step (in the same step, like any connection between Python processes); it keeps the values of the
``window`` steps from step ``start`` (the source's latency, ``Program.latency``) of each run of
``period`` steps and, at the last step of that window,
computes the mask with ``gate_common.mask_from_window`` (the function the numba, cuda and torch
backends use, so the decisions are identical) and stores it in the ``mask`` Var (1.0 kept, 0.0
masked), which the lava backend reads after the run. The step within a run is ``(time_step - 1) %
period``: every run of the lava backend is exactly ``period`` steps, so nothing needs resetting
between runs. It has no output port: the backend applies the mask itself (``lava.gates``).

``FusedBlock`` is a fused block of host mode (``lava.fusion`` docstring): host ops,
zero-delay projections and/or a population the LIF of Lava cannot compute, executed in one Python
process, float32, with zero delay: each step it receives every input port, computes its members in
topological order (``lava.fusion.BlockStep``: the numba backend's float32 arithmetic and the
shared torch host-op kernels, all lanes of the batch at once), sends the members read by other
processes and records the members the backend reads back in ``data`` (rows: each recorded
member's ``lanes * size`` values, in order; columns: the steps). Its ports are named ``in0..``
and ``out0..`` (one per external source / exported member); since a process model declares its
ports as class attributes, :func:`fused_model` makes (and caches) one model class per port count.
The state (host-op state, membranes) restarts at step 0 of every ``period``-step run.
"""
from __future__ import annotations

import os
import typing as ty

import numpy as np
from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.model import PyLoihiProcessModel
from lava.magma.core.model.py.ports import PyInPort, PyOutPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.process.ports.ports import InPort, OutPort
from lava.magma.core.process.process import AbstractProcess
from lava.magma.core.process.variable import Var
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol

__all__ = ["HostAdd", "PyHostAddFloat", "PyHostAddFixed", "host_model", "FTWTGate", "PyFTWTGateFloat", "FusedBlock",
           "fused_model"]


class HostAdd(AbstractProcess):
    """Element-wise sum of everything connected to ``a_in``, sent on ``s_out`` in the same step."""

    def __init__(self, *, shape: ty.Tuple[int, ...], buffer: int, name: ty.Optional[str] = None) -> None:
        super().__init__(shape=shape, buffer=buffer, name=name)
        self.a_in = InPort(shape=shape)
        self.s_out = OutPort(shape=shape)
        self.data = Var(shape=tuple(shape) + (int(buffer),), init=0)


class _PyHostAdd(PyLoihiProcessModel):
    a_in = None
    s_out = None
    data = None

    def run_spk(self) -> None:
        x = self.a_in.recv()
        self.data[..., (self.time_step - 1) % self.data.shape[-1]] = x
        self.s_out.send(x)


@implements(proc=HostAdd, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyHostAddFloat(_PyHostAdd):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    data: np.ndarray = LavaPyType(np.ndarray, float)


@implements(proc=HostAdd, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyHostAddFixed(_PyHostAdd):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32)
    data: np.ndarray = LavaPyType(np.ndarray, np.int32)


def host_model(op: str, precision: str) -> type:
    """The process model class of host op ``op`` at ``precision`` ("fixed" or "float32")."""
    if op != "add":
        raise KeyError(op)
    return PyHostAddFixed if precision == "fixed" else PyHostAddFloat


class FTWTGate(AbstractProcess):
    """An FTWT gate head (module docstring): reads ``a_in`` (``n_in`` values, the source's flat
    ``(C_in, ...)`` output), and after steps ``start .. start+window-1`` of each ``period``-step run holds the mask
    ``[C_out]`` (1.0 kept) in ``mask``. ``weight`` ``[C_out, C_in]`` and ``bias`` ``[C_out]`` are
    the ``Gate`` node's."""

    def __init__(self, *, n_in: int, weight: np.ndarray, bias: np.ndarray, window: int, period: int,
                 start: int = 0, name: ty.Optional[str] = None) -> None:
        weight = np.asarray(weight, np.float32)
        bias = np.asarray(bias, np.float32)
        c_out, c_in = weight.shape
        if n_in % c_in or not 0 < window <= period - start or start < 0:
            raise ValueError(f"FTWTGate: {n_in} inputs for {c_in} channels, window {window} from step {start}, "
                             f"period {period}")
        super().__init__(n_in=n_in, weight=weight, bias=bias, window=window, period=period, start=start, name=name)
        self.a_in = InPort(shape=(n_in,))
        self.mask = Var(shape=(c_out,), init=np.ones(c_out))
        self.values = Var(shape=(window, n_in), init=np.zeros((window, n_in)))


@implements(proc=FTWTGate, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyFTWTGateFloat(PyLoihiProcessModel):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    mask: np.ndarray = LavaPyType(np.ndarray, float)
    values: np.ndarray = LavaPyType(np.ndarray, float)

    def __init__(self, proc_params) -> None:  # noqa: ANN001 - Lava's ProcessParameters
        super().__init__(proc_params)
        self._weight = proc_params["weight"]
        self._bias = proc_params["bias"]
        self._window = int(proc_params["window"])
        self._period = int(proc_params["period"])
        self._start = int(proc_params.get("start", 0))
        self._c_in = self._weight.shape[1]

    def run_spk(self) -> None:
        x = self.a_in.recv()
        t = (self.time_step - 1) % self._period - self._start
        if not 0 <= t < self._window:
            return
        self.values[t] = x
        if t == self._window - 1:
            from spike.backends.gate_common import mask_from_window

            # float32 like the other backends' source values; [steps, 1, C_in, positions]
            vals = self.values.astype(np.float32).reshape(self._window, 1, self._c_in, -1)
            self.mask[:] = mask_from_window(self._weight, self._bias, vals)[0]


class FusedBlock(AbstractProcess):
    """A fused block (module docstring): ``spec`` a ``lava.fusion.FusedSpec``, ``lanes`` samples
    side by side, input ports ``in{i}`` of ``in_sizes[i]`` values, output ports ``out{i}`` of
    ``out_sizes[i]``, and ``record`` the (member index, "out" or "v") pairs kept in ``data``
    (``buffer`` steps)."""

    def __init__(self, *, spec: ty.Any, lanes: int, record: ty.List[ty.Tuple[int, str]], period: int, buffer: int,
                 in_sizes: ty.List[int], out_sizes: ty.List[int], name: ty.Optional[str] = None) -> None:
        rows = sum(int(lanes) * spec.members[j].node.size for j, _ in record)
        super().__init__(spec=spec, lanes=int(lanes), record=list(record), period=int(period), n_in=len(in_sizes),
                         n_out=len(out_sizes), name=name)
        for i, n in enumerate(in_sizes):
            setattr(self, f"in{i}", InPort(shape=(int(n),)))
        for i, n in enumerate(out_sizes):
            setattr(self, f"out{i}", OutPort(shape=(int(n),)))
        self.data = Var(shape=(max(rows, 1), int(buffer)), init=0)


def _fork_safe_kernels() -> None:
    """Make the host-op kernels usable in a Lava worker, which is a fork of the process that built
    the graph (Lava's runtime forks). That process may already have run OpenMP thread pools (torch's
    intra-op pool and numba's "omp" threading layer share GNU libgomp), whose threads do not exist in
    the fork: a parallel torch kernel would wait for them forever, and numba kills a forked child
    that enters a parallel loop. So each worker runs torch on one thread, and the WKV kernel
    (``spike.kernels.wkv.wkv_forward_kernel``, ``prange`` over rows x channel blocks) as its own Python
    function, which calls the same compiled per-row function in the same order: identical floats,
    no parallel region. Only a worker process is affected (never the process that imported us)."""
    if os.getpid() == _IMPORTED_BY:
        return
    import torch

    import spike.kernels.wkv as wkv

    torch.set_num_threads(1)
    kernel = wkv.wkv_forward_kernel
    if hasattr(kernel, "py_func"):
        wkv.wkv_forward_kernel = kernel.py_func


class _PyFusedBlock(PyLoihiProcessModel):
    """The model of every ``FusedBlock``; :func:`fused_model` adds the port attributes."""

    data = None

    def __init__(self, proc_params) -> None:  # noqa: ANN001 - Lava's ProcessParameters
        super().__init__(proc_params)
        from spike.backends.lava.fusion import BlockStep

        self._spec = proc_params["spec"]
        self._block = BlockStep(self._spec, proc_params["lanes"], proc_params["period"])
        self._record = proc_params["record"]
        self._period = int(proc_params["period"])
        self._n_in, self._n_out = int(proc_params["n_in"]), int(proc_params["n_out"])
        self._ports: ty.Optional[ty.Tuple[list, list]] = None
        _fork_safe_kernels()

    def run_spk(self) -> None:
        if self._ports is None:  # Lava sets the ports after __init__
            self._ports = ([getattr(self, f"in{i}") for i in range(self._n_in)],
                           [getattr(self, f"out{i}") for i in range(self._n_out)])
        ins, outs = self._ports
        if (self.time_step - 1) % self._period == 0:
            self._block.reset()
        vals = self._block.step([p.recv() for p in ins])
        for p, j in zip(outs, self._spec.outputs):
            p.send(vals[j].reshape(-1).astype(np.float64))
        if self._record:
            col = (self.time_step - 1) % self.data.shape[-1]
            parts = [vals[j] if what == "out" else self._block.membrane(j) for j, what in self._record]
            self.data[:, col] = np.concatenate([np.asarray(v, np.float64).reshape(-1) for v in parts])


_IMPORTED_BY = os.getpid()  # the process building Lava graphs; its forks run the process models
_FUSED_MODELS: ty.Dict[ty.Tuple[int, int], type] = {}


def fused_model(n_in: int, n_out: int) -> type:
    """The process model class of a ``FusedBlock`` with ``n_in`` input and ``n_out`` output ports
    (float; made once per pair and cached: Lava's runtime forks, so the class reaches its workers)."""
    key = (int(n_in), int(n_out))
    if key not in _FUSED_MODELS:
        attrs: ty.Dict[str, ty.Any] = {f"in{i}": LavaPyType(PyInPort.VEC_DENSE, float) for i in range(key[0])}
        attrs.update({f"out{i}": LavaPyType(PyOutPort.VEC_DENSE, float) for i in range(key[1])})
        attrs["data"] = LavaPyType(np.ndarray, float)
        attrs["__module__"] = __name__
        cls = type(f"PyFusedBlock{key[0]}x{key[1]}", (_PyFusedBlock,), attrs)
        _FUSED_MODELS[key] = implements(proc=FusedBlock, protocol=LoihiProtocol)(requires(CPU)(tag("floating_pt")(cls)))
    return _FUSED_MODELS[key]
