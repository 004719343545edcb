"""Spiking neuron modules: :class:`LIF`, :class:`IF`, :class:`CubaLIF` and :class:`LI` (design §3).

One definition, element-wise per neuron, input time-first ``x[T, B, ...]``; state starts at zero
(``v = s_prev = i = 0``) for every multi-step call. Operation order is literal (every backend
reproduces it bit for bit):

* ``reset_delay=True`` (snnTorch default; the reset caused by step t-1's spike lands at step t)::

      subtract: v_t = beta*v_{t-1} + g*x_t - thr*s_{t-1}
      zero:     v_t = beta*((1-s_{t-1})*v_{t-1}) + g*x_t
      none:     v_t = beta*v_{t-1} + g*x_t
      s_t = H(v_t - thr)                       membrane output: v_t

* ``reset_delay=False``::

      h_t = beta*v_{t-1} + g*x_t ;  s_t = H(h_t - thr)
      subtract: v_t = h_t - thr*s_t ; zero: v_t = h_t*(1-s_t) ; none: v_t = h_t
      membrane output: v_t (after the reset)

``H`` fires on ``>`` (snnTorch) or ``>=`` (``fire_ge=True``, SpikingJelly). ``detach_reset=True``
(snnTorch) stops the gradient through the spike inside the reset term (the threshold still gets
``-s``); SpikingJelly/SpikeGPT use ``False``. CubaLIF first filters the input,
``i_t = alpha*i_{t-1} + x_t``, and the membrane sees ``i_t`` in place of ``x_t``.

Compatibility notes (checked in ``tests/core/test_neurons.py``):

* ``snntorch.Leaky(beta, threshold, reset_mechanism, reset_delay)`` is reproduced exactly
  (float32) for reset subtract/zero with ``reset_delay`` True or False, with one exception:
  snnTorch's ``reset_delay=False`` *subtract* mode computes its delayed reset term
  ``H(mem_prev - thr)`` on the already-reset membrane and subtracts ``thr`` once more (then adds it
  back), so whenever a membrane stays above threshold after a reset (inputs larger than about
  ``thr``) its spikes differ from the formula above. This module follows the formula.
* ``snntorch.Synaptic(alpha, beta)`` is reproduced exactly for reset subtract and none. (Its
  ``zero`` mode zeroes the whole new membrane, input included; ours resets only the previous
  membrane, as Leaky does.)
* SpikingJelly's ``LIFNode(tau, decay_input=True, v_reset=0)`` as used by SpikeGPT is
  ``LIF.spikingjelly(tau=2.0)``: ``beta = 1-1/tau``, ``gain = 1/tau``, ``fire_ge``, reset zero
  without delay, ``detach_reset=False``; ``H = 0.5*V + 0.5*X`` exactly for tau=2 (SpikingJelly's own
  ``v + (x - v)/tau`` agrees to rounding).

Multi-step calls use the fused kernel (:mod:`spike.kernels.lif`); single-step calls
(``step_mode="single"``) run :func:`lif_step` (torch ops, same formulas) on state kept in the
module; both give identical values.
"""

from __future__ import annotations

import math
import operator
from functools import lru_cache
from typing import Optional

import torch
from torch import nn

from spike import semantics, surrogate as _sg
from spike.kernels.lif import (
    conv_lif_max_pool2d, conv_lif_max_pool2d_supported, lif_max_pool2d, lif_max_pool2d_supported, lif_multistep,
)
from spike.kernels.lif_cpu import RESET_CODES

__all__ = ["lif_step", "LIF", "IF", "CubaLIF", "LI"]


def _detach(s: torch.Tensor) -> torch.Tensor:
    return s.detach()


@lru_cache(maxsize=None)
def _training_step(surrogate: _sg.Surrogate, detach_reset: bool):
    """:func:`spike.semantics.make_neuron_step` on tensors, firing through ``surrogate``."""
    return semantics.make_neuron_step(operator.mul, surrogate.fire, _detach if detach_reset else semantics.same, 1)


def lif_step(
    x: torch.Tensor,
    v: Optional[torch.Tensor],
    s_prev: Optional[torch.Tensor],
    beta,
    threshold,
    *,
    i: Optional[torch.Tensor] = None,
    alpha=None,
    gain: float = 1.0,
    reset: str = "subtract",
    reset_delay: bool = True,
    fire_ge: bool = False,
    detach_reset: bool = True,
    surrogate="atan",
):
    """One LIF step on torch tensors (autograd-friendly): returns ``(s, v, i)``; the update of
    :mod:`spike.semantics` (charge ``beta*v + gain*I``), firing through the surrogate's
    Heaviside of ``v - threshold``, the reset detached unless ``detach_reset`` is False.

    ``v``, ``s_prev`` (and ``i`` when ``alpha`` is given) are the state after the previous step;
    None means zero. ``beta``, ``threshold``, ``alpha``: floats or tensors broadcastable to ``x``.
    ``i`` is returned as None without ``alpha``.
    """
    if reset not in RESET_CODES:
        raise ValueError(f"reset: expected one of {sorted(RESET_CODES)}, got {reset!r}")
    if v is None:
        v = torch.zeros_like(x)
    if s_prev is None:
        s_prev = torch.zeros_like(x)
    if alpha is None:
        i = None
    elif i is None:
        i = torch.zeros_like(x)
    step = _training_step(_sg.get(surrogate), bool(detach_reset))
    s, v, _, i, _ = step(x, None, v, s_prev, i, None, beta, threshold, alpha, None, None, gain, 0.0,
                         semantics.MODEL_LIF if alpha is None else semantics.MODEL_CUBA, semantics.RESETS[reset],
                         reset_delay, fire_ge, semantics.CHARGE_BETA, semantics.RULE_STANDARD, False)
    return s, v, i


# ---------------------------------------------------------------------------------------------
# argument validation
# ---------------------------------------------------------------------------------------------


def _as_shape(shape) -> Optional[tuple]:
    if shape is None:
        return None
    if isinstance(shape, int):
        shape = (shape,)
    try:
        shape = tuple(int(d) for d in shape)
    except (TypeError, ValueError) as e:
        raise ValueError(f"shape: expected an int or a tuple of ints, got {shape!r}") from e
    if any(d <= 0 for d in shape):
        raise ValueError(f"shape: dimensions must be positive, got {shape}")
    return shape


def _param_tensor(name: str, value, shape, lo=None, hi=None) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        t = value.detach().clone()
        if not t.is_floating_point():
            t = t.to(torch.get_default_dtype())
    else:
        try:
            t = torch.tensor(float(value), dtype=torch.get_default_dtype())
        except (TypeError, ValueError) as e:
            raise ValueError(f"{name}: expected a float or a tensor, got {value!r}") from e
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name}: must be finite, got {value!r}")
    if lo is not None and bool((t < lo).any()):
        raise ValueError(f"{name}: must be in [{lo}, {hi}], got {value!r}")
    if hi is not None and bool((t > hi).any()):
        raise ValueError(f"{name}: must be in [{lo}, {hi}], got {value!r}")
    if shape is not None:
        try:
            t = torch.broadcast_to(t, shape).clone()
        except RuntimeError as e:
            raise ValueError(f"{name}: shape {tuple(t.shape)} does not broadcast to shape {shape}") from e
    return t


def _check_bool(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name}: expected a bool, got {value!r}")
    return value


# ---------------------------------------------------------------------------------------------
# modules
# ---------------------------------------------------------------------------------------------


class _Neuron(nn.Module):
    model = "lif"
    _has_alpha = False

    def __init__(
        self,
        beta=None,
        threshold=1.0,
        *,
        tau=None,
        alpha=None,
        reset: str = "subtract",
        reset_delay: bool = True,
        fire_ge: bool = False,
        gain: float = 1.0,
        decay_input: bool = False,
        detach_reset: bool = True,
        surrogate="atan",
        learn_beta: bool = False,
        learn_threshold: bool = False,
        learn_alpha: bool = False,
        shape=None,
        step_mode: str = "multi",
        return_mem: bool = False,
    ):
        super().__init__()
        if reset not in RESET_CODES:
            raise ValueError(f"reset: expected one of {sorted(RESET_CODES)}, got {reset!r}")
        if step_mode not in ("multi", "single"):
            raise ValueError(f"step_mode: expected 'multi' or 'single', got {step_mode!r}")
        for name, val in (("reset_delay", reset_delay), ("fire_ge", fire_ge),
                          ("decay_input", decay_input), ("detach_reset", detach_reset),
                          ("learn_beta", learn_beta), ("learn_threshold", learn_threshold),
                          ("learn_alpha", learn_alpha), ("return_mem", return_mem)):
            _check_bool(name, val)
        try:
            gain = float(gain)
        except (TypeError, ValueError) as e:
            raise ValueError(f"gain: expected a float, got {gain!r}") from e
        if not math.isfinite(gain):
            raise ValueError(f"gain: must be finite, got {gain!r}")
        shape = _as_shape(shape)

        if tau is not None and beta is not None:
            raise ValueError("beta, tau: give one of them, not both")
        if tau is not None:
            try:
                tau_f = float(tau)
            except (TypeError, ValueError) as e:
                raise ValueError(f"tau: expected a float, got {tau!r}") from e
            if not math.isfinite(tau_f) or tau_f < 1.0:
                raise ValueError(f"tau: must be >= 1 (beta = 1 - 1/tau in [0, 1]), got {tau!r}")
            beta = 1.0 - 1.0 / tau_f
            decay_gain = 1.0 / tau_f
        elif beta is None:
            raise ValueError("beta: required (or give tau)")
        else:
            decay_gain = None
        if decay_input:
            if gain != 1.0:
                raise ValueError("gain: set by decay_input (gain = 1/tau = 1 - beta); leave it at 1.0")
            if decay_gain is None:
                if isinstance(beta, torch.Tensor) and beta.numel() != 1:
                    raise ValueError("decay_input: needs a scalar beta or tau (gain is one float)")
                decay_gain = 1.0 - float(beta)
            gain = decay_gain

        self.step_mode = step_mode
        self.reset = reset
        self.reset_delay = reset_delay
        self.fire_ge = fire_ge
        self.detach_reset = detach_reset
        self.decay_input = decay_input
        self.gain = gain
        self.surrogate = _sg.get(surrogate)
        self.learn_beta = learn_beta
        self.learn_threshold = learn_threshold
        self.learn_alpha = learn_alpha
        self.shape = shape
        self.return_mem = return_mem
        self.backend = "auto"

        self._register("beta", _param_tensor("beta", beta, shape if learn_beta else None, 0.0, 1.0),
                       learn_beta)
        self._register("threshold", _param_tensor("threshold", threshold,
                                                  shape if learn_threshold else None),
                       learn_threshold)
        if self._has_alpha:
            if alpha is None:
                raise ValueError("alpha: required for CubaLIF")
            self._register("alpha", _param_tensor("alpha", alpha, shape if learn_alpha else None,
                                                  0.0, 1.0), learn_alpha)
        else:
            self.alpha = None
        self.reset_state()

    def _register(self, name: str, t: torch.Tensor, learn: bool) -> None:
        if learn:
            setattr(self, name, nn.Parameter(t))
        else:
            self.register_buffer(name, t)

    # -- effective parameters (snnTorch clamps learnable decays into [0, 1])
    def _beta(self):
        return self.beta.clamp(0, 1) if self.learn_beta else self.beta

    def _alpha(self):
        if self.alpha is None:
            return None
        return self.alpha.clamp(0, 1) if self.learn_alpha else self.alpha

    def reset_state(self) -> None:
        """Forget the single-step state (``v``, ``s_prev``, ``i``)."""
        self.v = None
        self.s_prev = None
        self.i = None

    def _state_ok(self, st, x) -> bool:
        return st is not None and st.shape == x.shape and st.device == x.device and st.dtype == x.dtype

    def _kwargs(self):
        return dict(gain=self.gain, reset=self.reset, reset_delay=self.reset_delay,
                    fire_ge=self.fire_ge, detach_reset=self.detach_reset, surrogate=self.surrogate)

    def forward(self, x: torch.Tensor, return_mem: Optional[bool] = None):
        rm = self.return_mem if return_mem is None else bool(return_mem)
        if self.step_mode == "multi":
            if x.dim() < 2:
                raise ValueError(f"{type(self).__name__}: multi-step input must be [T, B, ...], "
                                 f"got shape {tuple(x.shape)}")
            return lif_multistep(x, self._beta(), self.threshold, alpha=self._alpha(),
                                 return_mem=rm, backend=self.backend, **self._kwargs())
        if not x.is_floating_point():
            x = x.to(torch.get_default_dtype())
        v = self.v if self._state_ok(self.v, x) else None
        s = self.s_prev if self._state_ok(self.s_prev, x) else None
        i = self.i if self._state_ok(self.i, x) else None
        dt = x.dtype
        beta = self._beta().to(dt)
        thr = self.threshold.to(dt)
        alpha = self._alpha()
        alpha = None if alpha is None else alpha.to(dt)
        s, v, i = lif_step(x, v, s, beta, thr, i=i, alpha=alpha, **self._kwargs())
        self.v, self.s_prev, self.i = v, s, i
        return (s, v) if rm else s

    def max_pool2d(self, x: torch.Tensor, kernel_size) -> Optional[torch.Tensor]:
        """``max_pool2d`` (window = stride = ``kernel_size``, the last two dimensions) of this neuron's
        multi-step spikes over ``x[T, B, ..., H, W]`` from the fused kernel
        (:func:`spike.kernels.lif.lif_max_pool2d`: the same values and gradients, the full-size spikes
        never stored), or None where it does not take the call (single-step, ``return_mem``, a
        non-spiking model, ``backend="loop"``, or an input outside
        :func:`~spike.kernels.lif.lif_max_pool2d_supported`): the caller then pools the spikes."""
        if not self._fuses() or not lif_max_pool2d_supported(x, kernel_size):
            return None
        return lif_max_pool2d(x, self._beta(), self.threshold, kernel_size, alpha=self._alpha(), **self._kwargs())

    def conv_max_pool2d(self, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], padding,
                        kernel_size) -> Optional[torch.Tensor]:
        """:meth:`max_pool2d` of this neuron driven by ``conv2d(x[t], weight, bias, padding=padding)``
        (stride 1) over ``x[T, B, Cin, H, W]``, from the fused kernel
        (:func:`spike.kernels.lif.conv_lif_max_pool2d`: the currents never stored; equal to the three
        ops within float32 rounding), or None where it does not take the call (as :meth:`max_pool2d`,
        or outside :func:`~spike.kernels.lif.conv_lif_max_pool2d_supported`)."""
        if not self._fuses() or not conv_lif_max_pool2d_supported(x, weight, padding, kernel_size):
            return None
        return conv_lif_max_pool2d(x, weight, bias, padding, self._beta(), self.threshold, kernel_size,
                                   alpha=self._alpha(), **self._kwargs())

    def _fuses(self) -> bool:
        """Whether this neuron's settings let a fused kernel take a multi-step call."""
        return not (self.step_mode != "multi" or self.return_mem or self.model == "li" or self.backend == "loop")

    def extra_repr(self) -> str:
        parts = []
        for name in ("beta", "alpha", "threshold"):
            t = getattr(self, name, None)
            if t is not None:
                parts.append(f"{name}={t.item():g}" if t.numel() == 1 else f"{name}=<{tuple(t.shape)}>")
        parts += [f"gain={self.gain:g}", f"reset={self.reset!r}", f"reset_delay={self.reset_delay}",
                  f"fire_ge={self.fire_ge}", f"detach_reset={self.detach_reset}",
                  f"surrogate={self.surrogate.name}({self.surrogate.param:g})",
                  f"step_mode={self.step_mode!r}"]
        return ", ".join(parts)


class LIF(_Neuron):
    """Leaky integrate-and-fire neuron (snnTorch ``Leaky`` semantics by default).

    ``LIF(beta, threshold=1.0, *, tau=None, reset="subtract", reset_delay=True, fire_ge=False,
    gain=1.0, decay_input=False, detach_reset=True, surrogate="atan", learn_beta=False,
    learn_threshold=False, shape=None, step_mode="multi", return_mem=False)``.

    Give ``beta`` (decay in [0, 1], float or per-neuron tensor broadcast over the trailing dims)
    or ``tau`` (``beta = 1 - 1/tau``; with ``decay_input=True`` also ``gain = 1/tau``).
    ``shape`` makes learnable parameters per-neuron. Multi-step ``forward(x[T, B, ...])`` returns
    spikes (``(spikes, mem)`` with ``return_mem``); single-step ``forward(x[B, ...])`` keeps
    ``v``, ``s_prev``, ``i`` in the module until :meth:`reset_state`.

    Equals ``snntorch.Leaky(beta, threshold, reset_mechanism=reset, reset_delay=reset_delay)``
    exactly, except snnTorch's ``reset_delay=False`` subtract mode when a membrane stays above
    threshold after its reset (see the module docstring).
    """

    model = "lif"

    def __init__(self, beta=None, threshold=1.0, **kwargs):
        if "alpha" in kwargs or "learn_alpha" in kwargs:
            raise ValueError("alpha: LIF has no synaptic current; use CubaLIF")
        super().__init__(beta, threshold, **kwargs)

    @classmethod
    def spikingjelly(cls, tau: float = 2.0, v_threshold: float = 1.0, *, detach_reset: bool = False,
                     surrogate=None, **kwargs) -> "LIF":
        """SpikingJelly ``LIFNode(tau, decay_input=True, v_reset=0)`` as used by SpikeGPT:
        ``beta = 1-1/tau``, ``gain = 1/tau``, spike on ``>=``, reset to zero without delay."""
        return cls(tau=tau, threshold=v_threshold, decay_input=True, reset="zero", reset_delay=False,
                   fire_ge=True, detach_reset=detach_reset,
                   surrogate=_sg.atan(2.0) if surrogate is None else surrogate, **kwargs)


class IF(_Neuron):
    """Integrate-and-fire: :class:`LIF` with ``beta = 1`` (no leak)."""

    model = "if"

    def __init__(self, threshold=1.0, **kwargs):
        for bad in ("beta", "tau", "learn_beta", "decay_input", "alpha", "learn_alpha"):
            if bad in kwargs:
                raise ValueError(f"{bad}: IF has no leak (beta = 1)")
        super().__init__(1.0, threshold, **kwargs)


class CubaLIF(_Neuron):
    """Current-based LIF (snnTorch ``Synaptic`` semantics): ``i = alpha*i + x`` then LIF on ``i``.

    ``CubaLIF(alpha, beta, threshold=1.0, *, learn_alpha=False, ...)`` with the :class:`LIF`
    keyword arguments.
    """

    model = "cuba_lif"
    _has_alpha = True

    def __init__(self, alpha=None, beta=None, threshold=1.0, **kwargs):
        super().__init__(beta, threshold, alpha=alpha, **kwargs)


class LI(_Neuron):
    """Leaky integrator readout: ``v_t = beta*v_{t-1} + g*x_t``; no spikes, returns the membrane.

    ``LI(beta=None, *, tau=None, gain=1.0, decay_input=False, learn_beta=False, shape=None,
    step_mode="multi")``. ``threshold`` is +inf and ``reset`` is ``"none"`` (for code that reads
    these attributes generically).
    """

    model = "li"

    def __init__(self, beta=None, **kwargs):
        for bad in ("threshold", "reset", "reset_delay", "fire_ge", "detach_reset",
                    "learn_threshold", "alpha", "learn_alpha", "return_mem"):
            if bad in kwargs:
                raise ValueError(f"{bad}: LI does not spike")
        super().__init__(beta, 1.0, reset="none", **kwargs)
        self.threshold.fill_(float("inf"))

    def forward(self, x: torch.Tensor, return_mem: Optional[bool] = None):
        """Returns the membrane: ``[T, B, ...]`` (multi-step) or ``[B, ...]`` (single-step)."""
        _, mem = super().forward(x, return_mem=True)
        return mem
