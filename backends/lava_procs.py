"""Our Lava processes: host ops run as custom Lava Python processes (design brief §6).

Imported by ``lava_backend`` only after :func:`spike.compat.lava.ensure_lava` (this module imports
lava at the top). The lava backend maps each process to its model explicitly (Lava's
``exception_proc_model_map``, keyed by process instance), so Lava's compiler never scans this
folder for process models.

``HostAdd`` is the IR's ``add`` host op: Lava sums the messages of every connection into one
``InPort`` (in connection order, the IR's source order), which is exactly the element-wise sum, so
one input port serves any number of operands. It receives and sends in the same step (a host op
has no delay, as in the IR) and records what it sent in ``data`` (a ring buffer over time, last
axis), so that no sink process is needed to read it.
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

__all__ = ["HostAdd", "PyHostAddFloat", "PyHostAddFixed", "host_model"]


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
