"""Graph compiler: PyTorch/snnTorch/SpikingJelly models -> passes -> event-driven IR ``Program``."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from spike.compiler.passes.delays import DELAY_MODES
from spike.compiler.passes.delays import target_delays as apply_target_delays
from spike.compiler.ir.nodes import NODE_TYPES
from spike.compiler.ir.program import Program, ProgramBuilder, ProgramError
from spike.hardware import load_target

PRECISIONS_BUILT = ("float32", "fixed")


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
    (snnTorch ``init_hidden=True``, SpikingJelly ``step_mode="s"``) models; a model holding
    SpikingJelly modules lowers through ``frontends.spikingjelly``; snnTorch models in the
    tutorials' style (a time loop with the state passed by hand, ``init_hidden=False``) take
    ``[T, B, ...]`` and lower through ``frontends.snntorch``; ``input_signal`` forces "spike" or "real" inputs
    (default: "spike" when the example input is binary). A ``.nir`` path or a ``nir.NIRGraph`` is
    imported with ``nir_options`` (``dt``, ``reset``, ``reset_delay``, ``fire_ge``, ``discretization``,
    ``input_signal``; see ``from_nir``).
    A :class:`~spike.models.spikegpt.SpikeGPT` needs no example input: it lowers through
    ``frontends.spikegpt`` (float32, host targets). ``precision="fixed"`` runs the float
    pipeline, then :func:`~spike.compiler.passes.quantize.quantize` (Loihi fixed point; its per-layer
    report is in ``program.metadata["quantization"]``). On a target whose synapses deliver late
    (``core.synaptic_delay`` of the hw config: Loihi's one step) :func:`~spike.compiler.passes.delays.target_delays`
    then gives every projection that delay and balances merging paths, so the program computes
    the trained network with its outputs ``program.total_latency`` steps late (every backend
    realigns them); ``target_delays="raw"`` asks for the plain target delays instead. On a target
    with cores the program is then partitioned and placed (``partition.map_program``), weighting
    spike traffic by ``firing_rates`` (per node, events per neuron per step, e.g. from
    ``partition.calibration_rates`` of a run the caller made; uniform when None).
    """
    from spike.compiler.passes import FLOAT_PIPELINE, run_passes
    from spike.compiler.ir.validate import program_precision

    if precision not in PRECISIONS_BUILT:
        raise ValueError(f"precision {precision!r}: this compiler builds {list(PRECISIONS_BUILT)}")
    if target_delays not in DELAY_MODES:
        raise ValueError(f"target_delays {target_delays!r}: expected one of {', '.join(DELAY_MODES)}")
    hw = load_target(target)

    def for_target(program: Program) -> Program:
        program = apply_target_delays(program, hw.synaptic_delay, hw.max_delay, target_delays)
        if hw.has_cores and not program.metadata.get("mapping"):
            from spike.compiler.mapping.partition import map_program

            program = map_program(program, hw, firing_rates)
        return program

    if (isinstance(model, (str, Path)) and Path(model).suffix == ".nir") or _is_nir_graph(model):
        from spike.compiler.frontends.nir_import import from_nir

        program = from_nir(model, run_pipeline=False, **(nir_options or {}))
        program = program.with_graph(
            program.graph, metadata={**program.metadata, "target": hw.name, "precision": precision, **(metadata or {})}
        )
    elif isinstance(model, (str, Path)):
        from spike.compiler.io.hdf5 import load_program

        program = load_program(model)
        if program_precision(program) == "fixed":
            if precision != "fixed":
                raise ValueError(f"{model}: the saved program is fixed point; it cannot be compiled to {precision!r}")
            return for_target(program)
    elif _is_spikegpt(model):
        return _compile_spikegpt(model, target, precision, metadata)
    else:
        if example_input is None:
            raise ValueError("compile(model, example_input): an example input is needed to trace a model")
        from spike.compiler.frontends.snntorch import is_tutorial_style, trace_tutorial
        from spike.compiler.frontends.torch_fx import trace

        if _holds_spikingjelly(model):  # SpikingJelly's neurons and layers (an optional dependency)
            trace = _spikingjelly_trace()
        elif is_tutorial_style(model):  # snnTorch neurons with the state passed by hand in a time loop
            trace = trace_tutorial
        meta = {"target": hw.name, "precision": "float32", **(metadata or {})}
        program = trace(model, example_input, input_signal=input_signal, metadata=meta)
    program = run_passes(program, FLOAT_PIPELINE)
    if precision == "fixed":
        from spike.compiler.passes.quantize import quantize

        program = quantize(program)
    return for_target(program)


def _holds_spikingjelly(model: Any) -> bool:
    modules = getattr(model, "modules", None)
    return callable(modules) and any(type(m).__module__.startswith("spikingjelly") for m in modules())


def _spikingjelly_trace() -> Any:
    """``frontends.spikingjelly.trace`` (importing it registers SpikingJelly's modules)."""
    try:
        from spike.compiler.frontends.spikingjelly import trace
    except ModuleNotFoundError as exc:
        raise ImportError(f"compiling a SpikingJelly model needs spikingjelly 2.0 ({exc}); install it with "
                          "`pip install --no-deps spikingjelly==2.0.0 'loguru>=0.7,<1'`") from exc
    return trace


def _is_nir_graph(model: Any) -> bool:
    import sys

    nir = sys.modules.get("nir")  # a NIRGraph exists only where nir has been imported
    return nir is not None and isinstance(model, nir.NIRGraph)


def _is_spikegpt(model: Any) -> bool:
    from spike.models.spikegpt import SpikeGPT

    return isinstance(model, SpikeGPT)


def _compile_spikegpt(model: Any, target: str, precision: str, metadata: dict[str, Any] | None) -> Program:
    """SpikeGPT lowers by its own frontend (``frontends.spikegpt``): host ops everywhere but the
    embedding, LIF layers and residual adds, so it targets hosts without cores, in float32."""
    from spike.compiler.frontends.spikegpt import lower_spikegpt

    if precision != "float32":
        raise ValueError(f"precision {precision!r}: SpikeGPT's host ops (LayerNorm, WKV, matmuls on real "
                         "values) have no fixed-point form; compile it in float32")
    hw = load_target(target)
    if hw.has_cores:
        raise ValueError(f"target {hw.name!r}: SpikeGPT is mostly host ops (real-valued matmuls, WKV, "
                         "LayerNorm) that no neuromorphic core runs; compile it for a host target such as "
                         "'generic' or 'cmos45nm_fp32'")
    from spike.compiler.ir.validate import validate_program

    program = lower_spikegpt(model, metadata={"target": hw.name, **(metadata or {})})
    validate_program(program)
    return program


__all__ = ["compile", "Program", "ProgramBuilder", "ProgramError", "NODE_TYPES"]
