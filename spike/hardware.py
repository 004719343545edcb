"""Hardware targets: per-core limits, chip layout, energy per operation, static power and step time.

A target is one YAML file (``hw_configs/<name>.yaml`` ships as package data; any other argument to
:func:`load_target` is a path). Files are read with ``yaml.safe_load`` and validated against
:data:`SCHEMA`; any problem raises :class:`HardwareConfigError` naming the file and the field path,
e.g. ``loihi1.yaml: energy.syn_op.value: expected a non-negative number, got -1``.

Schema (``schema_version: 1``). Top level: ``schema_version`` and ``name`` are required;
``description``, ``references`` and every section below are OPTIONAL -- a target leaves out what
it does not have (CMOS has no cores, ``generic`` has nothing at all):

- ``core`` (optional; needs ``chip``): per-core limits, all figures. Required inside it:
  ``neurons`` [neurons], ``syn_mem_bits`` [bits], ``fan_in_axons`` [axons], ``fan_out_axons``
  [axons], ``weight_bits`` [bits]; optional: ``fan_out_per_neuron`` [cores] (TrueNorth: one
  target axon per neuron), ``state_bits`` [bits], ``synaptic_delay`` [steps] (every synapse
  delivers this many steps after the spike; Loihi: 1) and ``max_delay`` [steps] (the longest
  delay a synapse can have; the delay pass balances merging paths within it).
- ``chip`` (optional; needs ``core``): ``cores_per_chip`` [cores], ``mesh_rows`` and
  ``mesh_cols`` [tiles], ``cores_per_tile`` [cores]; rows x cols x cores_per_tile must equal
  cores_per_chip. Chips sit side by side in one row (chip c's tiles follow chip c-1's columns).
- ``energy`` (optional), each figure optional, all energies per operation [pJ, fJ or nJ]:
  ``syn_op`` (accumulate driven by a binary event), ``mac`` (multiply-accumulate on a real
  input), ``neuron_update_active`` and ``neuron_update_idle``, ``spike`` (a spike sent within
  its core/tile), ``hop`` (per mesh hop), ``sram_read`` [pJ/byte], ``host_flop`` (one host op).
- ``power`` (optional): ``static`` [W/chip or mW/chip].
- ``timing`` (optional): ``time_per_step`` [s, ms, us or ns].

Every figure is a mapping ``{value, unit, source, kind}`` (all four required, ``note`` optional):
``value`` a finite non-negative number (count fields: a positive integer no larger than its
:data:`MAX_COUNTS` bound: at most 2^20 cores per chip, tiles per mesh side and cores per tile, 64
weight and state bits, 65535 steps of delay, 2^40 bits of synaptic memory and 2^31 - 1 for the
other counts, so that no absurd figure reaches the mapping), ``unit`` one of the units
listed for the field, ``source`` a non-empty string (paper and table; for an estimate, what it was
estimated from), ``kind`` one of ``measured``, ``published``, ``estimated``. Unknown keys are errors.
Figures keep the value and unit as written and carry ``si`` (J, J/byte, W/chip, s or the count).
A file must be UTF-8 text of at most :data:`MAX_FILE_BYTES` (1 MiB).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, fields
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

import yaml

SCHEMA_VERSION = 1
KINDS = ("measured", "published", "estimated")

_ENERGY_UNITS = {"pJ": 1e-12, "fJ": 1e-15, "nJ": 1e-9}
_COUNT = "count"  # marker: positive integer, no conversion

# section -> field -> (allowed units with SI factor, required?, integer?)
SCHEMA: dict[str, dict[str, tuple[dict[str, float], bool, bool]]] = {
    "core": {
        "neurons": ({"neurons": 1.0}, True, True),
        "syn_mem_bits": ({"bits": 1.0}, True, True),
        "fan_in_axons": ({"axons": 1.0}, True, True),
        "fan_out_axons": ({"axons": 1.0}, True, True),
        "weight_bits": ({"bits": 1.0}, True, True),
        "fan_out_per_neuron": ({"cores": 1.0}, False, True),
        "state_bits": ({"bits": 1.0}, False, True),
        "synaptic_delay": ({"steps": 1.0}, False, True),
        "max_delay": ({"steps": 1.0}, False, True),
    },
    "chip": {
        "cores_per_chip": ({"cores": 1.0}, True, True),
        "mesh_rows": ({"tiles": 1.0}, True, True),
        "mesh_cols": ({"tiles": 1.0}, True, True),
        "cores_per_tile": ({"cores": 1.0}, True, True),
    },
    "energy": {
        "syn_op": (_ENERGY_UNITS, False, False),
        "mac": (_ENERGY_UNITS, False, False),
        "neuron_update_active": (_ENERGY_UNITS, False, False),
        "neuron_update_idle": (_ENERGY_UNITS, False, False),
        "spike": (_ENERGY_UNITS, False, False),
        "hop": (_ENERGY_UNITS, False, False),
        "sram_read": ({"pJ/byte": 1e-12, "fJ/byte": 1e-15, "nJ/byte": 1e-9}, False, False),
        "host_flop": (_ENERGY_UNITS, False, False),
    },
    "power": {
        "static": ({"W/chip": 1.0, "mW/chip": 1e-3}, False, False),
    },
    "timing": {
        "time_per_step": ({"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}, False, False),
    },
}
SECTIONS_OPTIONAL = {"core": True, "chip": True, "energy": True, "power": True, "timing": True}
# (section, field) -> the largest value a count field may hold (others: _MAX_COUNT)
_MAX_COUNT = 2**31 - 1
MAX_COUNTS: dict[tuple[str, str], int] = {
    ("core", "syn_mem_bits"): 2**40,
    ("core", "weight_bits"): 64,
    ("core", "state_bits"): 64,
    ("core", "synaptic_delay"): 65535,  # the IR's longest delay (spike.compiler.ir.program.MAX_STEPS_DELAY)
    ("core", "max_delay"): 65535,
    ("chip", "cores_per_chip"): 2**20,
    ("chip", "mesh_rows"): 2**20,
    ("chip", "mesh_cols"): 2**20,
    ("chip", "cores_per_tile"): 2**20,
}
MAX_FILE_BYTES = 1 << 20
_TOP_KEYS = {"schema_version", "name", "description", "references", *SCHEMA}
_FIGURE_KEYS = {"value", "unit", "source", "kind", "note"}


class HardwareConfigError(ValueError):
    """A hardware config that breaks the schema; the message names the file and the field path."""


@dataclass(frozen=True)
class Figure:
    """One number with its provenance. ``si`` is ``value`` converted to SI (or the count)."""

    value: float
    unit: str
    source: str
    kind: str
    si: float
    note: str = ""

    @property
    def is_estimate(self) -> bool:
        return self.kind == "estimated"

    def to_json(self) -> dict[str, Any]:
        out = {"value": self.value, "unit": self.unit, "source": self.source, "kind": self.kind}
        if self.note:
            out["note"] = self.note
        return out


@dataclass(frozen=True)
class CoreLimits:
    neurons: Figure
    syn_mem_bits: Figure
    fan_in_axons: Figure
    fan_out_axons: Figure
    weight_bits: Figure
    fan_out_per_neuron: Figure | None = None
    state_bits: Figure | None = None
    synaptic_delay: Figure | None = None
    max_delay: Figure | None = None


@dataclass(frozen=True)
class ChipLayout:
    cores_per_chip: Figure
    mesh_rows: Figure
    mesh_cols: Figure
    cores_per_tile: Figure


@dataclass(frozen=True)
class EnergyFigures:
    syn_op: Figure | None = None
    mac: Figure | None = None
    neuron_update_active: Figure | None = None
    neuron_update_idle: Figure | None = None
    spike: Figure | None = None
    hop: Figure | None = None
    sram_read: Figure | None = None
    host_flop: Figure | None = None


@dataclass(frozen=True)
class PowerFigures:
    static: Figure | None = None


@dataclass(frozen=True)
class TimingFigures:
    time_per_step: Figure | None = None


@dataclass(frozen=True)
class HardwareTarget:
    name: str
    description: str
    path: str
    core: CoreLimits | None
    chip: ChipLayout | None
    energy: EnergyFigures
    power: PowerFigures
    timing: TimingFigures
    references: tuple[str, ...] = ()

    @property
    def synaptic_delay(self) -> int:
        """Steps between a spike and the current it causes on this target (0: within the step)."""
        fig = self.core.synaptic_delay if self.core is not None else None
        return int(fig.value) if fig is not None else 0

    @property
    def max_delay(self) -> int | None:
        """The longest synaptic delay the target can hold, in steps (None: no limit given)."""
        fig = self.core.max_delay if self.core is not None else None
        return int(fig.value) if fig is not None else None

    @property
    def has_cores(self) -> bool:
        """True when the target has neuromorphic cores to partition onto (and a chip mesh)."""
        return self.core is not None

    def figures(self) -> dict[str, Figure]:
        """Every figure the file gives, by path (``"energy.syn_op"``), in schema order."""
        out: dict[str, Figure] = {}
        for section in SCHEMA:
            obj = getattr(self, section)
            if obj is None:
                continue
            for f in fields(obj):
                fig = getattr(obj, f.name)
                if fig is not None:
                    out[f"{section}.{f.name}"] = fig
        return out

    def estimates(self) -> dict[str, Figure]:
        return {k: f for k, f in self.figures().items() if f.is_estimate}


# ---------------------------------------------------------------------------------------- loading

_SECTION_TYPES = {
    "core": CoreLimits, "chip": ChipLayout, "energy": EnergyFigures, "power": PowerFigures,
    "timing": TimingFigures,
}


def target_names() -> list[str]:
    """Names of the targets shipped in ``spike.hw_configs``."""
    root = resources.files("spike.hw_configs")
    return sorted(p.name[: -len(".yaml")] for p in root.iterdir() if p.name.endswith(".yaml"))


def _read(name_or_path: str | os.PathLike) -> tuple[str, str]:
    """(file label, text) of a built-in name or a path: at most :data:`MAX_FILE_BYTES` of UTF-8."""
    s = os.fspath(name_or_path)
    if isinstance(name_or_path, str) and s in target_names():
        label, data = f"{s}.yaml", resources.files("spike.hw_configs").joinpath(f"{s}.yaml").read_bytes()
    else:
        path = Path(s)
        if not path.is_file():
            raise HardwareConfigError(
                f"hardware target {s!r}: not a built-in target ({', '.join(target_names())}) "
                "and no such file"
            )
        label = s  # the path as given: the message names the file the user can find
        with path.open("rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise HardwareConfigError(f"{label}: larger than {MAX_FILE_BYTES} bytes: not a hardware config")
    try:
        return label, data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise HardwareConfigError(f"{label}: not UTF-8 text: byte 0x{data[e.start]:02x} at offset {e.start} "
                                  "(a hardware config is UTF-8 YAML)") from None


def _yaml_problem(e: yaml.YAMLError) -> str:
    """A YAML error on one line: where and what."""
    if isinstance(e, yaml.MarkedYAMLError) and e.problem_mark is not None:
        mark = e.problem_mark
        what = " ".join(f"{e.problem or ''} {f'({e.context})' if e.context else ''}".split())
        return f"line {mark.line + 1}, column {mark.column + 1}: {what}"
    return " ".join(str(e).split())


def load_target(name_or_path: "str | os.PathLike | HardwareTarget") -> HardwareTarget:
    """Load a built-in target by name (see :func:`target_names`) or a YAML file by path."""
    if isinstance(name_or_path, HardwareTarget):
        return name_or_path
    label, text = _read(name_or_path)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise HardwareConfigError(f"{label}: not valid YAML: {_yaml_problem(e)}") from None
    except RecursionError:
        raise HardwareConfigError(f"{label}: not valid YAML: nested too deeply") from None
    return parse_target(data, label, path=os.fspath(name_or_path))


def _fail(label: str, path: str, msg: str) -> HardwareConfigError:
    return HardwareConfigError(f"{label}: {path}: {msg}")


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _is_count(x: Any) -> bool:
    """A positive whole number (an int, or a float with no fraction)."""
    if isinstance(x, float):
        return math.isfinite(x) and x.is_integer() and x >= 1
    return _is_number(x) and x >= 1


def _is_amount(x: Any) -> bool:
    """A finite non-negative number that converts to a float."""
    if isinstance(x, int) and not isinstance(x, bool):
        return 0 <= x <= 2**1023  # larger ints do not convert to a float
    return isinstance(x, float) and math.isfinite(x) and x >= 0


def _figure(label: str, path: str, raw: Any, units: dict[str, float], integer: bool, maximum: int = _MAX_COUNT) -> Figure:
    if not isinstance(raw, Mapping):
        raise _fail(label, path, f"expected a mapping with {{value, unit, source, kind}}, got {raw!r}")
    for key in raw:
        if key not in _FIGURE_KEYS:
            raise _fail(label, f"{path}.{key}", f"unknown key (allowed: {', '.join(sorted(_FIGURE_KEYS))})")
    for key in ("value", "unit", "source", "kind"):
        if key not in raw:
            raise _fail(label, f"{path}.{key}", "missing (every figure needs value, unit, source and kind)")
    value = raw["value"]
    if integer:
        if not _is_count(value):
            raise _fail(label, f"{path}.value", f"expected a positive integer, got {value!r}")
        if value > maximum:
            raise _fail(label, f"{path}.value", f"expected a positive integer at most {maximum}, got {value!r}")
        value = int(value)
    elif not _is_amount(value):
        raise _fail(label, f"{path}.value", f"expected a non-negative number, got {value!r}")
    unit = raw["unit"]
    if unit not in units:
        raise _fail(label, f"{path}.unit", f"expected one of {', '.join(units)}, got {unit!r}")
    source = raw["source"]
    if not isinstance(source, str) or not source.strip():
        raise _fail(label, f"{path}.source", f"expected a non-empty string, got {source!r}")
    kind = raw["kind"]
    if kind not in KINDS:
        raise _fail(label, f"{path}.kind", f"expected one of {', '.join(KINDS)}, got {kind!r}")
    note = raw.get("note", "")
    if not isinstance(note, str):
        raise _fail(label, f"{path}.note", f"expected a string, got {note!r}")
    return Figure(value=value, unit=unit, source=source.strip(), kind=kind, si=value * units[unit], note=note)


def parse_target(data: Any, label: str = "<target>", path: str = "") -> HardwareTarget:
    """Validate a parsed YAML document and build the target (``label`` prefixes every error)."""
    if not isinstance(data, Mapping):
        raise HardwareConfigError(f"{label}: expected a mapping at the top level, got {type(data).__name__}")
    for key in data:
        if key not in _TOP_KEYS:
            raise _fail(label, str(key), f"unknown key (allowed: {', '.join(sorted(_TOP_KEYS))})")
    if "schema_version" not in data:
        raise _fail(label, "schema_version", "missing")
    if data["schema_version"] != SCHEMA_VERSION:
        raise _fail(label, "schema_version", f"expected {SCHEMA_VERSION}, got {data['schema_version']!r}")
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        raise _fail(label, "name", f"expected a non-empty string, got {name!r}")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise _fail(label, "description", f"expected a string, got {description!r}")
    refs = data.get("references") or []
    if not isinstance(refs, list) or not all(isinstance(r, str) for r in refs):
        raise _fail(label, "references", "expected a list of strings")

    sections: dict[str, Any] = {}
    for section, spec in SCHEMA.items():
        raw = data.get(section)
        if raw is None:
            sections[section] = None
            continue
        if not isinstance(raw, Mapping):
            raise _fail(label, section, f"expected a mapping or null, got {raw!r}")
        for key in raw:
            if key not in spec:
                raise _fail(label, f"{section}.{key}", f"unknown key (allowed: {', '.join(spec)})")
        values = {}
        for key, (units, required, integer) in spec.items():
            if raw.get(key) is None:
                if required:
                    raise _fail(label, f"{section}.{key}", "missing")
                continue
            values[key] = _figure(label, f"{section}.{key}", raw[key], units, integer,
                                  MAX_COUNTS.get((section, key), _MAX_COUNT))
        sections[section] = _SECTION_TYPES[section](**values)

    if (sections["core"] is None) != (sections["chip"] is None):
        have, lack = ("core", "chip") if sections["core"] is not None else ("chip", "core")
        raise _fail(label, lack, f"missing (a target with a {have} section needs both core and chip)")
    chip = sections["chip"]
    if chip is not None:
        per_chip = chip.mesh_rows.value * chip.mesh_cols.value * chip.cores_per_tile.value
        if per_chip != chip.cores_per_chip.value:
            raise _fail(
                label, "chip.cores_per_chip",
                f"mesh_rows x mesh_cols x cores_per_tile = {per_chip}, but cores_per_chip is "
                f"{chip.cores_per_chip.value}",
            )
    return HardwareTarget(
        name=name.strip(),
        description=description,
        path=path,
        core=sections["core"],
        chip=chip,
        energy=sections["energy"] or EnergyFigures(),
        power=sections["power"] or PowerFigures(),
        timing=sections["timing"] or TimingFigures(),
        references=tuple(refs),
    )


__all__ = [
    "HardwareConfigError", "HardwareTarget", "Figure", "CoreLimits", "ChipLayout", "EnergyFigures",
    "PowerFigures", "TimingFigures", "load_target", "parse_target", "target_names", "SCHEMA",
    "SCHEMA_VERSION", "KINDS", "MAX_COUNTS", "MAX_FILE_BYTES",
]
