"""``compile()`` and the pass pipelines, as data (design §5).

A model goes through the frontend that accepts it (``frontends.registry``), then through
:func:`passes_for`'s list: the float passes (:data:`FLOAT_PIPELINE`, ending with the FTWT gate
record, ``passes.gates``), the float precision (:func:`~spike.compiler.passes.float_precision`)
or quantisation for fixed point, the target's synaptic delays (balanced, latency recorded), and
partition and placement on a target with cores (firing rates from the caller: the compiler runs
nothing). Every pass is a pure ``Program -> Program`` function; none runs a pipeline.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from spike.compiler import frontends
from spike.compiler.io.hdf5 import load_program
from spike.compiler.ir.nodes import PRECISIONS
from spike.compiler.ir.program import Program
from spike.compiler.ir.precision import program_precision
from spike.compiler.mapping.partition import map_program
from spike.compiler.passes import canonicalize_neurons, check_cycles, float_precision, fold_batchnorm, infer_shapes
from spike.compiler.passes.delays import DELAY_MODES
from spike.compiler.passes.gates import record_gates
from spike.compiler.passes.delays import target_delays as balance_delays
from spike.compiler.passes.quantize import quantize
from spike.hardware import HardwareTarget, load_target

Pass = Callable[[Program], Program]

FLOAT_PIPELINE: tuple[Pass, ...] = (canonicalize_neurons, fold_batchnorm, infer_shapes, check_cycles, record_gates)
FIXED_PIPELINE: tuple[Pass, ...] = (*FLOAT_PIPELINE, quantize)


def run_passes(program: Program, passes: Iterable[Pass]) -> Program:
    """Apply ``passes`` in order, each to the previous one's result."""
    for p in passes:
        program = p(program)
    return program


def target_passes(hw: HardwareTarget, delays: str = "balanced",
                  firing_rates: Mapping[str, Any] | None = None) -> tuple[Pass, ...]:
    """The passes a target adds after the precision's: its synaptic delays, and on a target with
    cores partition and placement (weighting spike traffic by ``firing_rates``)."""
    passes: list[Pass] = [partial(balance_delays, delay=hw.synaptic_delay, max_delay=hw.max_delay, mode=delays)]
    if hw.has_cores:
        passes.append(partial(_mapped, target=hw, rates=firing_rates))
    return tuple(passes)


def passes_for(precision: str, hw: HardwareTarget, delays: str = "balanced",
               firing_rates: Mapping[str, Any] | None = None,
               float_passes: tuple[Pass, ...] = FLOAT_PIPELINE) -> tuple[Pass, ...]:
    """The whole pipeline for ``precision`` on ``hw`` (after a frontend)."""
    precision_pass = quantize if precision == "fixed" else partial(float_precision, precision=precision)
    return (*float_passes, precision_pass, *target_passes(hw, delays, firing_rates))


def _mapped(program: Program, target: HardwareTarget, rates: Mapping[str, Any] | None) -> Program:
    """Partition and place, unless the program was mapped already (a saved mapped program)."""
    return program if program.metadata.get("mapping") else map_program(program, target, rates)


def compile(  # noqa: A001 - the natural name for a compiler entry point
    model: Any,
    example_input: Any = None,
    target: str = "generic",
    precision: str = "float32",
    input_signal: str | None = None,
    metadata: dict[str, Any] | None = None,
    nir_options: dict[str, Any] | None = None,
    target_delays: str = "balanced",
    firing_rates: dict[str, Any] | None = None,
) -> Program:
    """Compile a model (or a saved program path) to a Program for ``target``.

    ``example_input`` is ``[T, B, ...]`` for multi-step models and ``[B, ...]`` for single-step
    (snnTorch ``init_hidden=True``, SpikingJelly ``step_mode="s"``) models; snnTorch models in the
    tutorials' style (a time loop with the state passed by hand) take ``[T, B, ...]``;
    ``input_signal`` forces "spike" or "real" inputs (default: "spike" when the example input is
    binary). A ``.nir`` path or a ``nir.NIRGraph`` is imported with ``nir_options`` (``dt``,
    ``reset``, ``reset_delay``, ``fire_ge``, ``discretization``, ``input_signal``; see
    ``frontends.nir_import.from_nir``). A model family with its own lowering (SpikeGPT) needs no
    example input. The frontend is the first of ``frontends.registry`` that accepts the model; the
    passes are :func:`passes_for`'s: the float passes, the float precision (``"float32"``, or
    ``"float64"``: populations and sums in double, as NEST and Brian2; the numba backend runs it),
    :func:`~spike.compiler.passes.quantize.quantize` for ``precision="fixed"`` (Loihi fixed point;
    its per-layer report is in ``program.metadata["quantization"]``), the target's synaptic delays (``core.synaptic_delay`` of
    the hw config: Loihi's one step; balanced so the program computes the trained network with its
    outputs ``program.total_latency`` steps late, which every backend realigns;
    ``target_delays="raw"`` asks for the plain target delays), and on a target with cores
    partition and placement weighting spike traffic by ``firing_rates`` (per node, events per
    neuron per step, e.g. ``spike.workflows.calibration_rates`` of a run the caller made; uniform
    when None).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: this compiler builds {list(PRECISIONS)}")
    if target_delays not in DELAY_MODES:
        raise ValueError(f"target_delays {target_delays!r}: expected one of {', '.join(DELAY_MODES)}")
    hw = load_target(target)
    if isinstance(model, (str, Path)) and Path(model).suffix != ".nir":  # a saved program
        program = load_program(model)
        if program_precision(program) == "fixed":
            if precision != "fixed":
                raise ValueError(f"{model}: the saved program is fixed point; it cannot be compiled to {precision!r}")
            return run_passes(program, target_passes(hw, target_delays, firing_rates))
        return run_passes(program, passes_for(precision, hw, target_delays, firing_rates))
    frontend = frontends.frontend_for(model)
    if frontend.check is not None:
        frontend.check(hw, precision)
    if frontend.needs_example and example_input is None:
        raise ValueError("compile(model, example_input): an example input is needed to trace a model")
    program = frontend.lower(model, example_input, input_signal=input_signal, nir_options=nir_options,
                             metadata={"target": hw.name, "precision": "float32", **(metadata or {})})
    float_passes = FLOAT_PIPELINE if frontend.passes is None else frontend.passes
    return run_passes(program, passes_for(precision, hw, target_delays, firing_rates, float_passes))
