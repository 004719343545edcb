"""Our Lava processes: host ops and FTWT gates run as custom Lava Python processes (design brief §6).

Imported by ``lava_backend`` only after :func:`spike.compat.lava.ensure_lava` (this module imports
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
first ``window`` steps of each run of ``period`` steps and, at the last step of that window,
computes the mask with ``gate_common.mask_from_window`` (the function the numba, cuda and torch
backends use, so the decisions are identical) and stores it in the ``mask`` Var (1.0 kept, 0.0
masked), which the lava backend reads after the run. The step within a run is ``(time_step - 1) %
period``: every run of the lava backend is exactly ``period`` steps, so nothing needs resetting
between runs. It has no output port: the backend applies the mask itself (``lava_backend``).
"""
from __future__ import annotations

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

__all__ = ["HostAdd", "PyHostAddFloat", "PyHostAddFixed", "host_model", "FTWTGate", "PyFTWTGateFloat"]


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
    ``(C_in, ...)`` output), and after ``window`` steps of each ``period``-step run holds the mask
    ``[C_out]`` (1.0 kept) in ``mask``. ``weight`` ``[C_out, C_in]`` and ``bias`` ``[C_out]`` are
    the ``Gate`` node's."""

    def __init__(self, *, n_in: int, weight: np.ndarray, bias: np.ndarray, window: int, period: int,
                 name: ty.Optional[str] = None) -> None:
        weight = np.asarray(weight, np.float32)
        bias = np.asarray(bias, np.float32)
        c_out, c_in = weight.shape
        if n_in % c_in or not 0 < window <= period:
            raise ValueError(f"FTWTGate: {n_in} inputs for {c_in} channels, window {window}, period {period}")
        super().__init__(n_in=n_in, weight=weight, bias=bias, window=window, period=period, name=name)
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
        self._c_in = self._weight.shape[1]

    def run_spk(self) -> None:
        x = self.a_in.recv()
        t = (self.time_step - 1) % self._period
        if t >= self._window:
            return
        self.values[t] = x
        if t == self._window - 1:
            from spike.backends.gate_common import mask_from_window

            # float32 like the other backends' source values; [steps, 1, C_in, positions]
            vals = self.values.astype(np.float32).reshape(self._window, 1, self._c_in, -1)
            self.mask[:] = mask_from_window(self._weight, self._bias, vals)[0]
