"""snnTorch models in the tutorials' style: a Python time loop with the neuron state passed by hand.

::

    def forward(self, x):                      # x: [T, B, ...]
        mem1 = self.lif1.init_leaky()
        spk_rec, mem_rec = [], []
        for step in range(x.shape[0]):         # or a global / self.num_steps equal to T
            spk1, mem1 = self.lif1(self.fc1(x[step]), mem1)
            spk_rec.append(spk1); mem_rec.append(mem1)
        return torch.stack(spk_rec), torch.stack(mem_rec)

torch.fx cannot trace such a loop (its length and indices are Python integers taken from the
input), so this frontend *records* one run of ``forward`` on the example input ``[T, B, ...]``:
every call of a leaf module (forward hooks) and every torch operation outside modules (a
``TorchFunctionMode``), with how their outputs feed each other (tensor identity). It then

1. splits the record into the ``T`` loop bodies (an operation computed from the input belongs to
   step ``t`` when the newest input step read so far is ``x[t]``);
2. checks that every step runs the same body: the same modules and operations in the same
   order, wired the same way, each module called once per step, and that the only values
   carried from step ``t`` to ``t + 1`` are the neurons' own state arguments (``_STATE_ARGS``:
   ``mem`` of Leaky and Lapicque; ``syn``, ``mem`` of Synaptic; ``syn_exc``, ``syn_inh``, ``mem``
   of Alpha; ``spk``, ``mem`` of RLeaky; ``spk``, ``syn``, ``mem`` of RSynaptic), each the output
   of the same name at the step before, starting from zeros (``init_leaky`` / ``reset_mem`` /
   zeros);
3. rebuilds the body as a single-step ``torch.fx`` graph whose neurons are ``init_hidden=True``
   copies (the state lives in the neuron, as in a compiled Population), and lowers it with
   :func:`spike.compiler.frontends.torch_fx.trace` on the example step ``x[0]``.

Anything else raises :class:`~spike.compiler.frontends.torch_fx.LoweringError` naming the module
and the construct (a module called twice per step, a body that differs between two steps, a
value carried across steps outside a neuron's state, an output that is not a stacked recording).

Outputs. ``forward`` must return stacked recordings ``torch.stack(rec, dim=0)`` (one tensor, or
a tuple of them). The program's single ``Output`` is the first returned tensor, which must be a
spike recording of a neuron. Every returned tensor is described in
``program.metadata["snntorch_returns"]`` (a list, in return order): ``{"index": i, "kind":
"spikes" | "membrane" | "synaptic" | "synaptic_exc" | "synaptic_inh", "population": NAME, "probe":
PROBE}`` where ``PROBE`` is what
to pass to ``run(..., probes=[PROBE])``: ``"output"`` for the first, ``NAME`` for other spike
recordings, ``"NAME.v"`` for a membrane recording (``mem`` of Leaky/Synaptic: the membrane after
the step's update, as snnTorch returns it). A synaptic-current recording has no probe (``probe``
is None). ``NAME`` is the population's node name
(:func:`~spike.compiler.frontends.torch_fx.node_name`: the module's path with dots replaced by
underscores, ``lif1``, ``features_lif1``; a container index named by the layer, ``leaky_1``).
"""
from __future__ import annotations

import copy
import inspect
import operator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx as fx
from torch import nn
from torch.overrides import TorchFunctionMode

from spike.compiler.frontends.torch_fx import MODULE_LOWERINGS, LoweringError, node_name, trace
from spike.compiler.ir.program import Program

# what each snnTorch neuron returns, in order; its state arguments are the outputs of the same names
_OUTPUTS = {
    "Leaky": ("spk", "mem"), "Synaptic": ("spk", "syn", "mem"), "Lapicque": ("spk", "mem"),
    "Alpha": ("spk", "syn_exc", "syn_inh", "mem"), "RLeaky": ("spk", "mem"), "RSynaptic": ("spk", "syn", "mem"),
}
_STATE_ARGS = {
    "Leaky": ("mem",), "Synaptic": ("syn", "mem"), "Lapicque": ("mem",), "Alpha": ("syn_exc", "syn_inh", "mem"),
    "RLeaky": ("spk", "mem"), "RSynaptic": ("spk", "syn", "mem"),
}
_RECORDING_KINDS = {"spk": "spikes", "mem": "membrane", "syn": "synaptic", "syn_exc": "synaptic_exc",
                    "syn_inh": "synaptic_inh"}
_VALUE_READS = {"__bool__", "item", "__int__", "__float__", "__index__", "tolist", "numpy", "__len__"}


def _snn_neuron_type() -> type | None:
    try:
        import snntorch
    except ImportError:  # pragma: no cover - snnTorch is optional
        return None
    return snntorch.SpikingNeuron


def is_tutorial_style(model: Any) -> bool:
    """True when ``model`` holds an snnTorch neuron with ``init_hidden=False`` (state by hand)."""
    base = _snn_neuron_type()
    if base is None or not isinstance(model, nn.Module):
        return False
    return any(isinstance(m, base) and not getattr(m, "init_hidden", False) for m in model.modules())


# ---- recording ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Ref:
    """A tensor argument: ``("in", t)`` = x[t], ``("ev", e, k)`` = output k of event e,
    ``("const", i)`` = a tensor made outside the input's data flow, ``("x",)`` = the whole input."""

    src: tuple


@dataclass
class _Event:
    kind: str  # "module" | "function"
    target: Any  # module path | torch function
    module: nn.Module | None
    args: tuple
    kwargs: dict
    outputs: list[torch.Tensor]
    step: int = -1
    is_recording: bool = False  # a stack/cat of several steps' values, or computed from one (after the loop)


@dataclass
class _Record:
    x: torch.Tensor
    events: list[_Event] = field(default_factory=list)
    source: dict[int, tuple] = field(default_factory=dict)  # id(tensor) -> _Ref.src
    keep: list[Any] = field(default_factory=list)  # keeps recorded tensors alive (ids stay unique)
    consts: list[torch.Tensor] = field(default_factory=list)
    slices: list[int] = field(default_factory=list)  # the steps t of x[t], in the order first read
    depth: int = 0
    current: int = -1  # the newest step x[t] an operation has read
    error: str | None = None

    def ref(self, t: torch.Tensor) -> _Ref:
        if t is self.x:
            return _Ref(("x",))
        src = self.source.get(id(t))
        if src is None:
            self.keep.append(t)
            self.consts.append(t)
            src = ("const", len(self.consts) - 1)
            self.source[id(t)] = src
        return _Ref(src)

    def template(self, v: Any) -> Any:
        if isinstance(v, torch.Tensor):
            return self.ref(v)
        if isinstance(v, (list, tuple)):
            return type(v)(self.template(a) for a in v)
        if isinstance(v, dict):
            return {k: self.template(a) for k, a in v.items()}
        return v

    def step_of(self, src: tuple) -> int:
        if src[0] == "in":
            return src[1]
        if src[0] == "ev":
            return self.events[src[1]].step
        return -1

    def add(self, kind: str, target: Any, module: nn.Module | None, args: tuple, kwargs: dict, out: Any) -> None:
        outs = list(out) if isinstance(out, (tuple, list)) else [out]
        if not all(isinstance(o, torch.Tensor) for o in outs):
            return
        arg_t, kw_t = self.template(args), self.template(kwargs or {})
        refs = [r for r in _refs(arg_t) + _refs(kw_t)]
        fresh = [o for o in outs if id(o) not in {id(a) for a in _tensors(args) + _tensors(kwargs)}]
        if not fresh:  # an alias of its input (e.g. .contiguous() of a contiguous tensor)
            return
        ev = _Event(kind, target, module, arg_t, kw_t, outs)
        if any(r.src[0] == "x" for r in refs) and not self.error:
            self.error = (f"{_describe(ev)} is applied to the whole input [T, B, ...]; the loop must read the "
                          "input one step at a time, as x[step]")
        # the step is the newest input step read so far (the loop's chronology), for values computed
        # from the input; values computed from no input (init_leaky, zeros) are constants (-1)
        for r in refs:
            if r.src[0] == "in" and r.src[1] not in self.slices:
                self.slices.append(r.src[1])
        self.current = max([self.current] + [r.src[1] for r in refs if r.src[0] == "in"])
        ev.step = self.current if max([self.step_of(r.src) for r in refs], default=-1) >= 0 else -1
        if kind == "function" and target in (torch.stack, torch.cat):
            ev.is_recording = len({self.step_of(r.src) for r in refs}) > 1
        # what is computed from a recording happens after the loop
        ev.is_recording |= any(r.src[0] == "ev" and self.events[r.src[1]].is_recording for r in refs)
        e = len(self.events)
        self.events.append(ev)
        for k, o in enumerate(outs):
            self.keep.append(o)
            self.source[id(o)] = ("ev", e, k)


def _nested(v: Any, kind: type) -> list[Any]:
    """The ``kind`` instances in ``v`` and in the lists, tuples and dict values nested in it, in order."""
    if isinstance(v, kind):
        return [v]
    if isinstance(v, (list, tuple)):
        return [r for a in v for r in _nested(a, kind)]
    if isinstance(v, dict):
        return [r for a in v.values() for r in _nested(a, kind)]
    return []


def _refs(v: Any) -> list[_Ref]:
    return _nested(v, _Ref)


def _tensors(v: Any) -> list[torch.Tensor]:
    return _nested(v, torch.Tensor)


def _step_index(idx: Any, T: int) -> int | None:
    """``t`` when ``x[idx]`` is the slice ``x[t]`` (``x[t]``, ``x[t, ...]``, ``x[t, :, :]``)."""
    if isinstance(idx, tuple) and idx and all(i is Ellipsis or i == slice(None) for i in idx[1:]):
        idx = idx[0]
    if isinstance(idx, bool) or not isinstance(idx, int):
        return None
    return idx + T if idx < 0 else idx


class _Mode(TorchFunctionMode):
    def __init__(self, rec: _Record):
        super().__init__()
        self.rec = rec

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        rec = self.rec
        if rec.depth or rec.error:
            return out
        name = getattr(func, "__name__", "")
        x, T = rec.x, rec.x.shape[0]
        if func is torch.Tensor.__getitem__ and args and args[0] is x:
            t = _step_index(args[1], T)
            if t is None or not isinstance(out, torch.Tensor):
                rec.error = f"the input is indexed as x[{args[1]!r}]; only whole steps x[step] can be lowered"
            else:
                rec.keep.append(out)
                rec.source[id(out)] = ("in", t)
            return out
        if func is torch.Tensor.__iter__ and args and args[0] is x:  # for x_t in x: the steps
            out = list(out)
            for t, o in enumerate(out):
                rec.source[id(o)] = ("in", t)
                rec.keep.append(o)
            return iter(out)
        if func in (torch.unbind, torch.Tensor.unbind) and args and args[0] is x:
            dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
            if dim != 0:
                rec.error = f"the input is unbound along dim {dim}; only steps (dim 0) can be lowered"
                return out
            for t, o in enumerate(out):
                rec.keep.append(o)
                rec.source[id(o)] = ("in", t)
            return out
        if name in _VALUE_READS and args and isinstance(args[0], torch.Tensor) and args[0] is not x:
            src = rec.source.get(id(args[0]))
            if src is not None and rec.step_of(src) >= 0:
                rec.error = (f"it reads a tensor computed from the input into Python (Tensor.{name}): "
                             "data-dependent Python control flow cannot be lowered")
            return out
        if name == "__setitem__" and args and any(
            t is x or rec.step_of(rec.source.get(id(t), ("const",))) >= 0 for t in _tensors(args)
        ):
            rec.error = ("it writes into a tensor by index (Tensor.__setitem__) with values computed from the input; "
                         "record each step's value in a list and return torch.stack(rec, dim=0)")
            return out
        inplace = (name.endswith("_") and not name.endswith("__")) or (name.startswith("__i") and name != "__index__")
        if inplace and args and isinstance(args[0], torch.Tensor):
            src = rec.source.get(id(args[0]))
            if args[0] is x or (src is not None and rec.step_of(src) >= 0):
                rec.error = (f"it changes a tensor computed from the input in place (Tensor.{name}); in-place "
                             "operations cannot be lowered: write y = op(y, ...) instead")
            return out
        rec.add("function", func, None, tuple(args), dict(kwargs), out)
        return out


def _leaves(model: nn.Module) -> list[tuple[str, nn.Module]]:
    base = _snn_neuron_type()
    leaves: list[tuple[str, nn.Module]] = []
    for path, m in model.named_modules():
        if not path or any(path.startswith(p + ".") for p, _ in leaves):
            continue
        if (base is not None and isinstance(m, base)) or type(m) in MODULE_LOWERINGS or not list(m.children()):
            leaves.append((path, m))
    return leaves


def _record(model: nn.Module, x: torch.Tensor) -> tuple[_Record, Any]:
    rec = _Record(x=x)
    handles = []

    def pre(m: nn.Module, args: tuple, kwargs: dict) -> None:
        rec.depth += 1

    def post(path: str, m: nn.Module, args: tuple, kwargs: dict, out: Any) -> None:
        rec.depth -= 1
        if rec.depth == 0 and not rec.error:
            outs = list(out) if isinstance(out, (tuple, list)) else [out]
            if not all(isinstance(o, torch.Tensor) for o in outs):
                rec.error = f"module {path!r} returns {type(out).__name__}, not tensors"
                return
            rec.add("module", path, m, tuple(args), dict(kwargs), out)

    for path, m in _leaves(model):
        handles.append(m.register_forward_pre_hook(pre, with_kwargs=True))
        handles.append(m.register_forward_hook(lambda m, a, k, o, path=path: post(path, m, a, k, o), with_kwargs=True))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), _Mode(rec):
            try:
                out = model(x)
            except Exception as exc:  # a forward that needs other arguments, or one that fails on [T, B, ...]
                raise LoweringError(f"running {type(model).__name__}.forward on the example input of shape "
                                    f"{list(x.shape)} ([T, B, ...]) failed: {type(exc).__name__}: {exc}") from exc
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    if rec.error:
        raise LoweringError(f"{type(model).__name__}.forward: {rec.error}")
    return rec, out


# ---- per-step body ---------------------------------------------------------------------------
def _describe(ev: _Event) -> str:
    if ev.kind == "module":
        return f"module {ev.target!r} ({type(ev.module).__name__})"
    fname = getattr(ev.target, "__name__", str(ev.target))
    if getattr(torch.Tensor, fname, None) is ev.target:
        return f"Tensor.{fname}()"
    return f"{getattr(ev.target, '__module__', None) or 'torch'}.{fname}()"


def _canon(rec: _Record, v: Any, t: int, pos: dict[int, int]) -> Any:
    """A template argument relative to step ``t``: ("x",), ("local", i, k), ("prev", i, k),
    ("init",), or ("far", ...) for anything else."""
    if isinstance(v, _Ref):
        s = v.src
        if s[0] == "in":
            return ("x",) if s[1] == t else ("far", f"x[{s[1]}]")
        if s[0] == "ev":
            ev = rec.events[s[1]]
            if ev.step == -1:  # made before the loop from no input (init_leaky, torch.zeros)
                return ("init", s)
            if ev.step == t and not ev.is_recording:
                return ("local", pos[s[1]], s[2])
            if ev.step == t - 1 and not ev.is_recording:
                return ("prev", pos[s[1]], s[2])
            return ("far", f"a value of step {ev.step} ({_describe(ev)})")
        if s[0] == "const":
            return ("init", s)
        return ("far", "the whole input x")
    if isinstance(v, (list, tuple)):
        return type(v)(_canon(rec, a, t, pos) for a in v)
    if isinstance(v, dict):
        return {k: _canon(rec, a, t, pos) for k, a in v.items()}
    return v


@dataclass
class _Step:
    events: list[_Event]
    args: list[tuple]  # canonical args per event
    kwargs: list[dict]


def _bodies(rec: _Record, T: int, name: str) -> list[_Step]:
    if rec.slices != list(range(T)):
        if rec.slices == list(range(len(rec.slices))):
            raise LoweringError(
                f"{name}.forward reads steps 0..{len(rec.slices) - 1} of an example input of {T} steps: "
                "loop over every step (for step in range(x.shape[0]))")
        raise LoweringError(f"{name}.forward reads the input steps in the order {rec.slices[:8]}...: expected "
                            f"x[0], x[1], ..., x[{T - 1}], in order")
    by_step: list[list[int]] = [[] for _ in range(T)]
    for e, ev in enumerate(rec.events):
        if ev.step >= 0 and not ev.is_recording:
            by_step[ev.step].append(e)
    pos = {e: i for ids in by_step for i, e in enumerate(ids)}
    steps = []
    for t, ids in enumerate(by_step):
        evs = [rec.events[e] for e in ids]
        steps.append(_Step(evs, [_canon(rec, ev.args, t, pos) for ev in evs],
                           [_canon(rec, ev.kwargs, t, pos) for ev in evs]))
    return steps


def _same_op(a: _Event, b: _Event) -> bool:
    return a.kind == b.kind and a.target == b.target if a.kind == "module" else a.target is b.target


def _init_free(v: Any) -> Any:
    if isinstance(v, tuple) and v and v[0] in ("init", "prev"):
        return ("state",)
    if isinstance(v, (list, tuple)):
        return type(v)(_init_free(a) for a in v)
    if isinstance(v, dict):
        return {k: _init_free(a) for k, a in v.items()}
    return v


def _compare(s0: _Step, s1: _Step, t0: int, t1: int, first: bool) -> None:
    """Raise unless steps t0 and t1 run the same body (``first``: t0 = 0, whose state is 'init')."""
    for i in range(max(len(s0.events), len(s1.events))):
        if i >= len(s0.events) or i >= len(s1.events):
            extra = (s1 if i >= len(s0.events) else s0).events[i]
            raise LoweringError(
                f"the loop body differs between steps {t0} and {t1}: step {t1 if i >= len(s0.events) else t0} "
                f"also calls {_describe(extra)} (operation {i} of the step); every step must run the same body")
        a, b = s0.events[i], s1.events[i]
        if not _same_op(a, b):
            raise LoweringError(
                f"the loop body differs between steps {t0} and {t1}: operation {i} is {_describe(a)} in step {t0} "
                f"and {_describe(b)} in step {t1} (a Python branch on the step?); every step must run the same body")
        a_args, b_args = (s0.args[i], s0.kwargs[i]), (s1.args[i], s1.kwargs[i])
        if first:
            a_args, b_args = _init_free(a_args), _init_free(b_args)
        if a_args != b_args:
            raise LoweringError(
                f"the loop body differs between steps {t0} and {t1}: {_describe(a)} (operation {i} of the step) "
                f"gets different inputs or arguments; every step must run the same body")


def _neuron_state(ev: _Event, path: str) -> tuple[inspect.BoundArguments, tuple[str, ...]]:
    kind = type(ev.module).__name__
    if kind not in _STATE_ARGS:
        raise LoweringError(f"module {path!r} of type {type(ev.module).__module__}.{kind}: snnTorch neuron type not "
                            f"supported in a time loop ({', '.join(_STATE_ARGS)} are)")
    try:
        bound = inspect.signature(ev.module.forward).bind(*ev.args, **ev.kwargs)
    except TypeError as exc:
        raise LoweringError(f"module {path!r}: cannot bind its call arguments: {exc}") from None
    return bound, _STATE_ARGS[kind]


def _check_body(rec: _Record, steps: list[_Step]) -> None:
    seen: dict[str, int] = {}
    for ev in steps[0].events:
        if ev.kind == "module":
            seen[ev.target] = seen.get(ev.target, 0) + 1
    twice = [p for p, c in seen.items() if c > 1]
    if twice:
        raise LoweringError(f"module {twice[0]!r} is called {seen[twice[0]]} times per step; the compiled program "
                            "has one layer per module, so each module may be called once per step (use one module "
                            "per layer)")
    base = _snn_neuron_type()
    ref_t = 1 if len(steps) > 1 else 0
    ref = steps[ref_t]
    neuron_pos = {i for i, ev in enumerate(ref.events) if isinstance(ev.module, base)}
    for i, ev in enumerate(ref.events):  # what feeds each operation (a clearer message than a body diff)
        where = _describe(ev)
        if i in neuron_pos:
            continue
        for a in _refs_canon((ref.args[i], ref.kwargs[i])):
            if a[0] == "prev":
                raise LoweringError(f"{where} reads a value of the previous step: the only values a loop may carry "
                                    "from one step to the next are the neurons' state arguments (mem, syn)")
            if a[0] == "init":
                raise LoweringError(f"{where} reads a tensor that does not come from the input (a parameter or "
                                    "constant used outside modules); it cannot be lowered")
            if a[0] == "far":
                raise LoweringError(f"{where} reads {a[1]}; only values of the same step can be lowered")
            if a[0] == "local" and a[1] in neuron_pos and a[2] > 0:
                src = ref.events[a[1]]
                raise LoweringError(
                    f"{where} reads the state (output {a[2]}) of module {src.target!r}: only a neuron's spikes can "
                    f"feed the network (probe the membrane at run time as '{src.target.replace('.', '_')}.v')")
    for t in range(1, len(steps)):
        _compare(steps[0] if t == 1 else steps[1], steps[t], 0 if t == 1 else 1, t, first=t == 1)
    for i, ev in enumerate(ref.events):
        if i not in neuron_pos:
            continue
        path = ev.target
        if getattr(ev.module, "init_hidden", False):
            raise LoweringError(f"module {path!r} has init_hidden=True inside a time loop whose other neurons "
                                "take their state by hand; use one style for the whole model")
        bound, names = _neuron_state(ev, path)
        cbound = inspect.signature(ev.module.forward).bind(*ref.args[i], **ref.kwargs[i]).arguments
        cbound0 = inspect.signature(ev.module.forward).bind(*steps[0].args[i], **steps[0].kwargs[i]).arguments
        first = next(iter(bound.arguments))
        for name in names:
            k = _OUTPUTS[type(ev.module).__name__].index(name)
            if bound.arguments.get(name) is None:
                raise LoweringError(f"module {path!r} is called without its state {name!r}: pass it by hand "
                                    f"(e.g. {name} = {path}.reset_mem() before the loop, then "
                                    f"spk, ..., {name} = {path}(cur, ..., {name}))")
            init = cbound0[name]
            if not (isinstance(init, tuple) and init[0] == "init"):
                raise LoweringError(f"module {path!r}: its state {name!r} at step 0 is computed from the input; "
                                    "it must start from zeros (init_leaky/init_synaptic/reset_mem)")
            value = _value(rec, init[1])
            if value.numel() and bool((value != 0).any()):
                raise LoweringError(f"module {path!r}: its state {name!r} starts from non-zero values; "
                                    "a compiled population starts from zero")
            if ref_t and cbound[name] != ("prev", i, k):
                raise LoweringError(
                    f"module {path!r}: its state {name!r} at step t must be the {name!r} it returned at step t-1 "
                    f"(output {k}); the loop passes something else")
        cur = cbound[first]
        if not (isinstance(cur, tuple) and cur and cur[0] in ("x", "local")):
            raise LoweringError(f"module {path!r}: its input current must be computed in the same step")


def _value(rec: _Record, src: tuple) -> torch.Tensor:
    return rec.consts[src[1]] if src[0] == "const" else rec.events[src[1]].outputs[src[2]]


def _refs_canon(v: Any) -> list[tuple]:
    if isinstance(v, tuple) and v and isinstance(v[0], str) and v[0] in ("x", "local", "prev", "init", "far"):
        return [v]
    if isinstance(v, (list, tuple)):
        return [r for a in v for r in _refs_canon(a)]
    if isinstance(v, dict):
        return [r for a in v.values() for r in _refs_canon(a)]
    return []


# ---- rebuilding the step as a single-step module ----------------------------------------------
def _single_step_neuron(m: nn.Module) -> nn.Module:
    c = copy.deepcopy(m)
    c.init_hidden = True
    c.output = False
    c.reset_mem()
    return c


def _live(step: _Step, output_pos: int) -> set[int]:
    """Positions of the step's operations that the output or a neuron needs (neurons stay: their
    recordings are probes)."""
    base = _snn_neuron_type()
    todo = [output_pos] + [i for i, ev in enumerate(step.events) if isinstance(ev.module, base)]
    live: set[int] = set()
    while todo:
        i = todo.pop()
        if i in live:
            continue
        live.add(i)
        todo.extend(r[1] for r in _refs_canon((step.args[i], step.kwargs[i])) if r[0] == "local")
    return live


def _build_graph(step: _Step, output_pos: int) -> fx.GraphModule:
    base = _snn_neuron_type()
    g = fx.Graph()
    x = g.placeholder("x")
    vals: dict[tuple[int, int], fx.Node] = {}
    modules: dict[str, nn.Module] = {}

    def sub(v: Any) -> Any:
        if isinstance(v, tuple) and v and isinstance(v[0], str) and v[0] in ("x", "local"):
            return x if v[0] == "x" else vals[(v[1], v[2])]
        if isinstance(v, (list, tuple)):
            return type(v)(sub(a) for a in v)
        if isinstance(v, dict):
            return {k: sub(a) for k, a in v.items()}
        return v

    live = _live(step, output_pos)
    for i, ev in enumerate(step.events):
        if i not in live:  # computed but unused (e.g. a firing rate for logging): not part of the network
            continue
        if ev.kind == "module" and isinstance(ev.module, base):
            bound = inspect.signature(ev.module.forward).bind(*step.args[i], **step.kwargs[i]).arguments
            modules[ev.target] = _single_step_neuron(ev.module)
            vals[(i, 0)] = g.call_module(ev.target, (sub(bound[next(iter(bound))]),))
            continue
        args, kwargs = sub(step.args[i]), sub(step.kwargs[i])
        if ev.kind == "module":
            modules[ev.target] = ev.module
            node = g.call_module(ev.target, args, kwargs)
        elif ev.target is torch.Tensor.__getitem__:
            node = g.call_function(operator.getitem, args, kwargs)
        elif ev.target is torch.Tensor.__add__ or ev.target is torch.Tensor.__radd__:
            node = g.call_function(operator.add, args, kwargs)
        elif getattr(torch.Tensor, getattr(ev.target, "__name__", ""), None) is ev.target:
            node = g.call_method(ev.target.__name__, args, kwargs)
        else:
            node = g.call_function(ev.target, args, kwargs)
        if len(ev.outputs) == 1:
            vals[(i, 0)] = node
        else:
            for k in range(len(ev.outputs)):
                vals[(i, k)] = g.call_function(operator.getitem, (node, k))
    g.output(vals[(output_pos, 0)])
    return fx.GraphModule(modules, g)


def _returns(rec: _Record, out: Any, steps: list[_Step], T: int, model: nn.Module) -> list[dict[str, Any]]:
    """What each returned tensor records: (neuron position in the step, output index)."""
    base = _snn_neuron_type()
    name = type(model).__name__
    outs = list(out) if isinstance(out, (tuple, list)) else [out]
    last = steps[-1]
    returns = []
    for i, o in enumerate(outs):
        bad = f"{name}.forward returns, as output {i}, an output that is not a stacked spike or membrane recording"
        src = rec.source.get(id(o)) if isinstance(o, torch.Tensor) else None
        if src is None or src[0] != "ev":
            raise LoweringError(f"{bad}; return torch.stack(rec, dim=0) of per-step neuron outputs")
        ev = rec.events[src[1]]
        dim = ev.args[1] if len(ev.args) > 1 else ev.kwargs.get("dim", 0)
        items = ev.args[0] if ev.args else ev.kwargs.get("tensors")
        if ev.target is not torch.stack or dim != 0 or not isinstance(items, (list, tuple)) or len(items) != T:
            raise LoweringError(f"{bad} (it is made by {_describe(ev)}); return torch.stack(rec, dim=0) of "
                                f"one neuron output per step ({T} steps)")
        canon = [_canon(rec, r, t, {e: j for j, e in enumerate(_ids(rec, t))}) for t, r in enumerate(items)]
        if len(set(canon)) != 1 or canon[0][0] != "local":
            raise LoweringError(f"{bad}: its items are not the same value of every step, in step order")
        _, p, k = canon[0]
        m = last.events[p].module
        if not isinstance(m, base):
            raise LoweringError(f"{bad}: it records the output of {_describe(last.events[p])}, not of a neuron")
        path = last.events[p].target
        pop = node_name(model, path)
        kind = _RECORDING_KINDS[_OUTPUTS[type(m).__name__][k]]
        probe = {"spikes": pop, "membrane": f"{pop}.v"}.get(kind)
        if i == 0:
            if kind != "spikes":
                raise LoweringError(f"{name}.forward returns a {kind} recording of {path!r} first: the first returned "
                                    "tensor must be a spike recording (the program's output)")
            probe = "output"
        returns.append({"index": i, "kind": kind, "population": pop, "probe": probe, "_pos": p})
    return returns


def _ids(rec: _Record, t: int) -> list[int]:
    return [e for e, ev in enumerate(rec.events) if ev.step == t and not ev.is_recording]


def trace_tutorial(
    model: nn.Module,
    example_input: torch.Tensor,
    input_signal: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> Program:
    """Lower an snnTorch tutorial-style model (time loop, state by hand) run on ``example_input``
    ``[T, B, ...]`` to an (un-optimised) Program whose output is the first returned recording."""
    name = type(model).__name__
    if isinstance(model, nn.Sequential):
        path = next(p for p, m in model.named_modules() if isinstance(m, _snn_neuron_type()))
        raise LoweringError(f"{name}: its snnTorch neuron {path!r} has init_hidden=False, but an nn.Sequential cannot "
                            "pass neuron state by hand: set init_hidden=True (and compile with one step [B, ...]) or "
                            "write a forward with a time loop that passes the state")
    if not isinstance(example_input, torch.Tensor) or example_input.dim() < 3:
        shape = list(example_input.shape) if isinstance(example_input, torch.Tensor) else type(example_input).__name__
        raise LoweringError(f"{name}: example input {shape}: a model with a time loop takes [T, B, ...]")
    T = int(example_input.shape[0])
    rec, out = _record(model, example_input)
    steps = _bodies(rec, T, name)
    _check_body(rec, steps)
    returns = _returns(rec, out, steps, T, model)
    ref = steps[1] if T > 1 else steps[0]
    gm = _build_graph(ref, returns[0]["_pos"])
    signal = input_signal or ("spike" if bool(((example_input == 0) | (example_input == 1)).all()) else "real")
    meta = {
        **(metadata or {}), "frontend": "snntorch_loop",
        "snntorch_returns": [{k: v for k, v in r.items() if k != "_pos"} for r in returns],
    }
    return trace(gm, example_input[0], input_signal=signal, metadata=meta, names_from=model)
