"""Save and load a :class:`~spike.compiler.ir.program.Program` as one HDF5 file (design brief §4, §9).

File layout (``schema_version`` 2)::

    bytes 0..511           HDF5 user block (ignored by HDF5): ``spike-sim program\n``,
                           ``sha256:<64 hex digits>\n`` (of every byte after the block), zeros
    /                      attrs: schema_version (int), producer ("spike-sim <version>"),
                                  target (str), precision (str), metadata (JSON str),
                                  inputs (str array), outputs (str array), latency (JSON str)
    /nodes/<name>          one group per node; attrs: kind (= node.KIND), order (int: position in
                           the graph's node order), and every int/float/bool/str/tuple field;
                           every non-None ndarray field is a dataset (dtype kept); None omitted
    /edges                 (E, 2) utf-8 string dataset of (source, consumer) pairs

Edges are stored in an order that reproduces both each node's consumer order and each node's
source order (:func:`~spike.compiler.ir.program.ordered_edges`). ``target`` and ``precision`` are
taken from ``program.metadata`` (``"target"``, ``"precision"``) when present; the precision
otherwise is ``fixed`` if any population is fixed point, else ``float32``. The metadata itself
must be JSON-serialisable (tuples come back as lists). ``Program.gated`` (the FTWT gate record)
is not stored: it follows from the graph, and loading derives it (``spike.compiler.passes.gates``).

Loading first checks the header's sha256 against the file's bytes, before HDF5 reads any of them:
a file changed or corrupted after it was written (a flipped byte anywhere, a truncation) is
refused naming the file, and HDF5 never parses damaged structures (which can hang or crash it).
A tool that edits a program file on purpose re-seals it with :func:`seal_program_file`. Then,
before any data is read, every dataset's declared size is checked against the bytes the file
really stores for it (:meth:`_Reader.check_storage`), so a small file cannot make the reader
allocate what it declares but does not hold. Loading is generic over the node dataclasses: each
field's expected type comes from the class annotations. Every problem raises
:class:`IRFormatError` naming the file (and node and field). The file is built in memory and
written by :func:`spike.atomic.atomic_write_bytes` (a temporary file beside the target, fsynced,
renamed): an interrupted or failed save (a full disk included) leaves the old file and no
temporary one, and the failure is an ``OSError`` from Python's own file writes.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
from pathlib import Path
from typing import Any

import h5py
import networkx as nx
import numpy as np

from spike.atomic import atomic_write_bytes
from spike.compiler.ir import nodes as ir
from spike.compiler.ir.nodes import Node
from spike.compiler.ir.precision import program_precision
from spike.compiler.ir.program import MAX_STEPS_DELAY, PRODUCER, Program, ProgramError, ordered_edges
from spike.compiler.ir.schema import FieldSpec, field_specs
from spike.compiler.ir.validate import validate_program
from spike.compiler.passes.gates import gated_nodes

__all__ = [
    "SCHEMA_VERSION",
    "IRFormatError",
    "save_program",
    "load_program",
    "seal_program_file",
    "programs_equal",
    "program_differences",
    "assert_programs_equal",
]

SCHEMA_VERSION = 2  # 2: the sealed header
HEADER_BYTES = 512  # HDF5's smallest user block
_MAGIC = b"spike-sim program\n"
_SEAL = re.compile(rb"sha256:([0-9a-f]{64})\n")
# the most a dataset stored with compression filters may expand: deflate's limit is 1032:1
MAX_COMPRESSION_RATIO = 1032


class IRFormatError(ValueError):
    """A file that is not a valid IR program; the message names the file, node and field."""


def _producer() -> str:
    try:
        from importlib.metadata import version

        return f"{PRODUCER} {version('spike-sim')}"
    except Exception:  # not installed (source checkout): still say who wrote it
        return f"{PRODUCER} unknown"


# ---- save -------------------------------------------------------------------------------
def _metadata_json(metadata: Any) -> str:
    if not isinstance(metadata, dict) and not hasattr(metadata, "items"):
        raise ProgramError(f"program metadata must be a mapping, got {type(metadata).__name__}")
    for key, value in metadata.items():
        if not isinstance(key, str):
            raise ProgramError(f"program metadata key {key!r} is not a string")
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as e:
            raise ProgramError(f"program metadata key {key!r} is not JSON-serialisable: {e}") from None
    return json.dumps(dict(metadata), allow_nan=False)


def _check_name(name: Any) -> None:
    if not isinstance(name, str) or not name or "/" in name or name == ".":
        raise ProgramError(f"node name {name!r} cannot be stored: names must be non-empty strings without '/'")


def _write_node(group: h5py.Group, node: Node, order: int) -> None:
    group.attrs["kind"] = node.KIND
    group.attrs["order"] = np.int64(order)
    for spec in field_specs(type(node)):
        value = getattr(node, spec.name)
        if value is None:
            continue
        if spec.kind == "array":
            group.create_dataset(spec.name, data=value)
        elif spec.kind == "tuple":
            group.attrs[spec.name] = np.asarray([int(x) for x in value], dtype=np.int64)
        elif spec.kind == "int":
            group.attrs[spec.name] = np.int64(value)
        elif spec.kind == "float":
            group.attrs[spec.name] = np.float64(value)
        elif spec.kind == "bool":
            group.attrs[spec.name] = np.bool_(value)
        else:
            group.attrs[spec.name] = str(value)


def _str_array(names: Any) -> np.ndarray:
    return np.array(list(names), dtype=h5py.string_dtype("utf-8"))


def _sealed(data: bytearray) -> bytearray:
    """``data`` (an HDF5 file with a :data:`HEADER_BYTES` user block) with its header written."""
    header = _MAGIC + b"sha256:" + hashlib.sha256(memoryview(data)[HEADER_BYTES:]).hexdigest().encode() + b"\n"
    data[:HEADER_BYTES] = header.ljust(HEADER_BYTES, b"\0")
    return data


def seal_program_file(path: str | os.PathLike) -> None:
    """Rewrite the header of a program file edited on purpose (with h5py) so that it loads: the
    sha256 of its bytes as they are now. Its content is still validated on load."""
    atomic_write_bytes(path, _sealed(bytearray(Path(path).read_bytes())))


def _check_seal(path: str, reader: "_Reader") -> None:
    """The header's sha256 against the bytes after it, read in 1 MiB pieces."""
    with open(path, "rb") as f:
        header = f.read(HEADER_BYTES)
        if not header.startswith(_MAGIC):
            what = ("an HDF5 file without a spike-sim program header (a NIR graph, or a program written "
                    "before schema 2: recompile it)") if h5py.is_hdf5(path) else "not an IR program file"
            raise reader.fail(what)
        seal = _SEAL.match(header, len(_MAGIC))
        if seal is None or len(header) < HEADER_BYTES or header[seal.end():].strip(b"\0"):
            raise reader.fail("the program header is damaged (recompile it)")
        digest = hashlib.sha256()
        for piece in iter(lambda: f.read(1 << 20), b""):
            digest.update(piece)
    if digest.hexdigest().encode() != seal.group(1):
        raise reader.fail("the bytes do not match the sha256 in the file's header: the file was changed or "
                          "corrupted after it was written (recompile it)")


def save_program(program: Program, path: str | os.PathLike) -> None:
    """Validate ``program`` and write it to ``path`` atomically, sealed (module docstring).

    Raises :class:`ProgramError` for an invalid program, a node name that cannot be a group
    name, or metadata that is not JSON-serialisable (naming the key).
    """
    path = os.fspath(path)
    validate_program(program)
    for name in program.graph.nodes:
        _check_name(name)
    metadata = _metadata_json(program.metadata)
    target = program.metadata.get("target", "")
    precision = program_precision(program)

    buffer = io.BytesIO()
    with h5py.File(buffer, "w", userblock_size=HEADER_BYTES) as f:
        f.attrs["schema_version"] = np.int64(SCHEMA_VERSION)
        f.attrs["producer"] = _producer()
        f.attrs["target"] = str(target)
        f.attrs["precision"] = precision
        f.attrs["metadata"] = metadata
        f.attrs["inputs"] = _str_array(program.inputs)
        f.attrs["outputs"] = _str_array(program.outputs)
        f.attrs["latency"] = json.dumps({n: int(v) for n, v in program.latency.items() if v})
        nodes = f.create_group("nodes")
        for order, (name, node) in enumerate(program.nodes()):
            _write_node(nodes.create_group(name), node, order)
        edges = ordered_edges(program.graph)
        data = np.array(edges, dtype=object).reshape(len(edges), 2)
        f.create_dataset("edges", data=data, shape=(len(edges), 2), dtype=h5py.string_dtype("utf-8"))
    atomic_write_bytes(path, _sealed(bytearray(buffer.getbuffer())))


# ---- load -------------------------------------------------------------------------------
class _Reader:
    def __init__(self, path: str) -> None:
        self.path = path
        self.where = "file root"  # what was being read, for errors from h5py

    def fail(self, msg: str) -> IRFormatError:
        return IRFormatError(f"{self.path}: {msg}")

    def node_fail(self, name: str, kind: str | None, field: str | None, msg: str) -> IRFormatError:
        where = f"node {name!r}" + (f" ({kind})" if kind else "") + (f", field {field}" if field else "")
        return self.fail(f"{where}: {msg}")

    # root ------------------------------------------------------------------------------
    def root_str(self, f: h5py.File, key: str, default: str | None = None) -> str:
        if key not in f.attrs:
            if default is not None:
                return default
            raise self.fail(f"missing root attribute {key!r}")
        v = f.attrs[key]
        if isinstance(v, bytes):
            v = v.decode("utf-8", "replace")
        if not isinstance(v, str):
            raise self.fail(f"root attribute {key!r} must be a string, got {type(v).__name__}")
        return v

    def root_json_object(self, f: h5py.File, key: str, what: str = "") -> dict:
        """The root attribute ``key``: a string holding a JSON object (``what``: how the error
        message describes it)."""
        try:
            value = json.loads(self.root_str(f, key))
        except json.JSONDecodeError as e:
            raise self.fail(f"root attribute {key} is not valid JSON: {e}") from None
        if not isinstance(value, dict):
            raise self.fail(f"root attribute {key} must be a JSON object{what}")
        return value

    def name_list(self, f: h5py.File, key: str) -> tuple[str, ...]:
        if key not in f.attrs:
            raise self.fail(f"missing root attribute {key!r}")
        v = f.attrs[key]
        arr = np.asarray(v)
        if arr.ndim != 1 or not all(isinstance(x, (str, bytes)) for x in arr.tolist()):
            raise self.fail(f"root attribute {key!r} must be a list of node names")
        return tuple(x.decode("utf-8") if isinstance(x, bytes) else x for x in arr.tolist())

    def check_version(self, f: h5py.File) -> None:
        if "schema_version" not in f.attrs:
            raise self.fail("missing schema_version attribute: not an IR program file")
        v = f.attrs["schema_version"]
        if not isinstance(v, (int, np.integer)) or isinstance(v, (bool, np.bool_)):
            raise self.fail(f"schema_version must be an integer, got {v!r}")
        v = int(v)
        if v > SCHEMA_VERSION:
            raise self.fail(
                f"schema_version {v} is newer than the supported version {SCHEMA_VERSION}; "
                "the file was written by a newer spike-sim, upgrade to read it"
            )
        if v != SCHEMA_VERSION:
            raise self.fail(f"schema_version {v} is not supported (supported: {SCHEMA_VERSION})")

    # storage --------------------------------------------------------------------------
    def check_storage(self, f: h5py.File) -> None:
        """Refuse, before reading any data, links out of the file and datasets whose declared size
        is not in the file.

        Rules, for every object reachable from the root (declared bytes = number of elements x
        element size):

        - every link is a hard link: soft and external links are refused (an external link would
          make the reader open another file);
        - a dataset's data lies in this file: virtual datasets and external raw storage are refused;
        - without compression filters, declared bytes <= stored bytes: every element is stored
          (none left to the fill value of an unwritten dataset or chunk);
        - with filters, declared bytes <= stored bytes x ``MAX_COMPRESSION_RATIO`` (1032, deflate's
          limit);
        - stored bytes count as at most the file's size, whatever the file's index claims.

        :func:`save_program` writes only groups and datasets, every array in full, contiguous and
        uncompressed (stored bytes = declared bytes), so its files always pass; the largest array a
        file can make the reader allocate is thus bounded by the file's own size (x 1032 when
        compressed).
        """
        file_size = os.path.getsize(self.path)
        seen: set[Any] = set()
        todo: list[tuple[str, h5py.Group]] = [("", f)]
        while todo:
            prefix, group = todo.pop()
            for key in group:
                path = f"{prefix}{key}"
                self.where = f"/{path}"
                link = group.get(key, getlink=True)
                if not isinstance(link, h5py.HardLink):
                    what = "an external link" if isinstance(link, h5py.ExternalLink) else "a soft link"
                    raise self.dataset_fail(group, path, f"is {what}: a program file holds only groups and "
                                                         "datasets of its own")
                obj = group[key]
                if obj.id in seen:
                    continue
                seen.add(obj.id)
                if isinstance(obj, h5py.Group):
                    todo.append((f"{path}/", obj))
                elif isinstance(obj, h5py.Dataset):
                    self.check_dataset(group, path, obj, file_size)

    def check_dataset(self, parent: h5py.Group, path: str, ds: h5py.Dataset, file_size: int) -> None:
        """The storage rules of :meth:`check_storage` for one dataset."""
        plist = ds.id.get_create_plist()
        if plist.get_layout() == h5py.h5d.VIRTUAL or plist.get_external_count():
            raise self.dataset_fail(parent, path, "keeps its data in other files (virtual or external storage); "
                                                  "a program file must hold its own data")
        declared = 0 if ds.shape is None else math.prod(int(d) for d in ds.shape) * ds.id.get_type().get_size()
        stored = min(int(ds.id.get_storage_size()), file_size)
        filters = plist.get_nfilters()
        if declared > (stored * MAX_COMPRESSION_RATIO if filters else stored):
            how = (f"its {filters} compression filter(s) expand at most {MAX_COMPRESSION_RATIO}x" if filters
                   else "an uncompressed dataset must store every element")
            raise self.dataset_fail(
                parent, path, f"declares shape {tuple(ds.shape)} of {ds.dtype} = {declared} bytes, but the "
                              f"file ({file_size} bytes) stores {stored} bytes of it ({how}); refusing to read it")

    def dataset_fail(self, parent: h5py.Group, path: str, msg: str) -> IRFormatError:
        """An error about the object at ``path`` (in group ``parent``), naming its node and field
        when it is one."""
        parts = path.split("/")
        if len(parts) == 3 and parts[0] == "nodes":
            kind = parent.attrs.get("kind")
            kind = kind.decode("utf-8", "replace") if isinstance(kind, bytes) else kind
            return self.node_fail(parts[1], kind if isinstance(kind, str) else None, parts[2], msg)
        return self.fail(f"/{path} {msg}")

    # nodes ------------------------------------------------------------------------------
    def attr_value(self, name: str, kind: str, spec: FieldSpec, v: Any) -> Any:
        def bad(expected: str) -> IRFormatError:
            return self.node_fail(name, kind, spec.name, f"expected {expected}, found {type(v).__name__} {v!r}")

        if spec.kind == "int":
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
                raise bad("an int")
            return int(v)
        if spec.kind == "float":
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
                raise bad("a float")
            return float(v)
        if spec.kind == "bool":
            if not isinstance(v, (bool, np.bool_)):
                raise bad("a bool")
            return bool(v)
        if spec.kind == "str":
            if isinstance(v, bytes):
                v = v.decode("utf-8", "replace")
            if not isinstance(v, str):
                raise bad("a str")
            return v
        if spec.kind == "tuple":
            arr = np.asarray(v)
            if arr.ndim != 1 or arr.dtype.kind not in "iu":
                raise bad("a 1-D integer array")
            return tuple(int(x) for x in arr)
        raise bad(spec.kind)

    def read_node(self, name: str, group: Any) -> tuple[int, Node]:
        self.where = f"/nodes/{name}"
        if not isinstance(group, h5py.Group):
            raise self.node_fail(name, None, None, "expected an HDF5 group")
        if "kind" not in group.attrs:
            raise self.node_fail(name, None, "kind", "missing node kind")
        kind = group.attrs["kind"]
        if isinstance(kind, bytes):
            kind = kind.decode("utf-8", "replace")
        if not isinstance(kind, str) or kind not in ir.NODE_TYPES:
            raise self.node_fail(
                name, None, "kind", f"unknown node kind {kind!r}; known kinds: {', '.join(ir.NODE_TYPES)}"
            )
        cls = ir.NODE_TYPES[kind]
        order = group.attrs.get("order")
        if order is None or isinstance(order, (bool, np.bool_)) or not isinstance(order, (int, np.integer)):
            raise self.node_fail(name, kind, "order", f"expected an int attribute, found {order!r}")
        specs = field_specs(cls)
        known = {s.name for s in specs}
        for key in list(group.attrs) + list(group):
            if key not in known and key not in ("kind", "order"):
                raise self.node_fail(name, kind, key, f"unknown field for a {kind} node")
        kwargs: dict[str, Any] = {}
        for spec in specs:
            self.where = f"/nodes/{name}/{spec.name}"
            if spec.kind == "array":
                if spec.name in group.attrs:
                    raise self.node_fail(name, kind, spec.name, "expected a dataset, found an attribute")
                if spec.name not in group:
                    kwargs[spec.name] = None
                    continue
                ds = group[spec.name]
                if not isinstance(ds, h5py.Dataset):
                    raise self.node_fail(name, kind, spec.name, "expected a dataset")
                if ds.dtype.kind not in "biuf":
                    raise self.node_fail(
                        name, kind, spec.name, f"expected a real-valued numeric array, found dtype {ds.dtype}"
                    )
                kwargs[spec.name] = np.asarray(ds[()])
            else:
                if spec.name in group:
                    raise self.node_fail(name, kind, spec.name, "expected an attribute, found a dataset")
                if spec.name not in group.attrs:
                    if spec.optional:
                        kwargs[spec.name] = None
                        continue
                    raise self.node_fail(name, kind, spec.name, "missing required field")
                kwargs[spec.name] = self.attr_value(name, kind, spec, group.attrs[spec.name])
        return int(order), cls(**kwargs)

    def read_edges(self, f: h5py.File, names: set[str]) -> list[tuple[str, str]]:
        self.where = "/edges"
        if "edges" not in f:
            raise self.fail("missing /edges dataset")
        ds = f["edges"]
        if not isinstance(ds, h5py.Dataset) or h5py.check_string_dtype(ds.dtype) is None:
            raise self.fail(f"/edges must be a string dataset, found {getattr(ds, 'dtype', type(ds).__name__)}")
        if ds.ndim != 2 or ds.shape[1] != 2:
            raise self.fail(f"/edges must have shape (E, 2), found {ds.shape}")
        raw = ds.asstr()[()] if ds.shape[0] else np.empty((0, 2), dtype=object)
        edges = [(str(u), str(v)) for u, v in np.asarray(raw, dtype=object).reshape(-1, 2)]
        seen = set()
        for u, v in edges:
            for n in (u, v):
                if n not in names:
                    raise self.fail(f"dangling edge {u!r} -> {v!r}: node {n!r} does not exist")
            if (u, v) in seen:
                raise self.fail(f"edge {u!r} -> {v!r} is listed twice")
            seen.add((u, v))
        return edges

    def read(self, f: h5py.File) -> Program:
        self.check_version(f)
        self.check_storage(f)
        self.root_str(f, "producer", default="")
        self.root_str(f, "target", default="")
        precision = self.root_str(f, "precision")
        if precision not in ir.PRECISIONS:
            raise self.fail(f"root attribute precision {precision!r} is not one of {', '.join(ir.PRECISIONS)}")
        metadata = self.root_json_object(f, "metadata")
        inputs = self.name_list(f, "inputs")
        outputs = self.name_list(f, "outputs")
        if "nodes" not in f or not isinstance(f["nodes"], h5py.Group):
            raise self.fail("missing /nodes group")
        entries = []
        for name in f["nodes"]:
            order, node = self.read_node(name, f["nodes"][name])
            entries.append((order, name, node))
        entries.sort(key=lambda e: e[0])
        orders = [e[0] for e in entries]
        if len(set(orders)) != len(orders):
            dup = sorted({o for o in orders if orders.count(o) > 1})
            names = [e[1] for e in entries if e[0] in dup]
            raise self.fail(f"nodes {names} share the same order attribute {dup}")
        graph = nx.DiGraph()
        for _, name, node in entries:
            graph.add_node(name, node=node)
        graph.add_edges_from(self.read_edges(f, set(graph.nodes)))
        for field, names in (("inputs", inputs), ("outputs", outputs)):
            for n in names:
                if n not in graph:
                    raise self.fail(f"root attribute {field} names node {n!r}, which does not exist")
        return Program(graph, inputs, outputs, metadata, self.latency(f, graph))

    def latency(self, f: h5py.File, graph: nx.DiGraph) -> dict[str, int]:
        """The optional root attribute ``latency``: a JSON object node -> steps (>= 0)."""
        if "latency" not in f.attrs:
            return {}
        raw = self.root_json_object(f, "latency", " (node name -> steps)")
        for n, v in raw.items():
            if n not in graph:
                raise self.fail(f"root attribute latency names node {n!r}, which does not exist")
            if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= MAX_STEPS_DELAY:
                raise self.fail(f"root attribute latency of node {n!r}: expected a whole number of steps "
                                f"0..{MAX_STEPS_DELAY}, got {v!r}")
        return {str(n): int(v) for n, v in raw.items()}


def load_program(path: str | os.PathLike) -> Program:
    """Read and validate a program written by :func:`save_program`.

    Raises :class:`FileNotFoundError` for a missing file and :class:`IRFormatError` (naming the
    file, and the node and field where relevant) for anything else wrong with it.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such IR program file")
    reader = _Reader(path)
    _check_seal(path, reader)
    try:
        with h5py.File(path, "r") as f:
            program = reader.read(f)
    except IRFormatError:
        raise
    except (OSError, KeyError, RuntimeError, TypeError, ValueError) as e:
        raise IRFormatError(
            f"{path}: cannot read {reader.where} (truncated or corrupt HDF5 file?): {type(e).__name__}: {e}"
        ) from e
    try:
        validate_program(program)
    except ProgramError as e:
        raise IRFormatError(f"{path}: {e}") from e
    return program.with_graph(program.graph, gated=gated_nodes(program))  # derived, not stored (passes.gates)


# ---- equality ---------------------------------------------------------------------------
def _value_diff(a: Any, b: Any) -> str | None:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        if not (isinstance(a, np.ndarray) and isinstance(b, np.ndarray)):
            return f"{type(a).__name__} vs {type(b).__name__}"
        if a.dtype != b.dtype:
            return f"dtype {a.dtype} vs {b.dtype}"
        if a.shape != b.shape:
            return f"shape {a.shape} vs {b.shape}"
        eq_nan = a.dtype.kind in "fc"
        if not np.array_equal(a, b, equal_nan=eq_nan):
            return "array values differ"
        return None
    if a is None or b is None:
        return None if a is b else f"{a!r} vs {b!r}"
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return None
    if isinstance(a, tuple) and isinstance(b, tuple):
        return None if a == b else f"{a!r} vs {b!r}"
    if isinstance(a, (bool, np.bool_)) != isinstance(b, (bool, np.bool_)):
        return f"{a!r} vs {b!r}"
    return None if a == b else f"{a!r} vs {b!r}"


def program_differences(a: Program, b: Program) -> list[str]:
    """Human-readable differences between two programs (empty when equal): node names and
    order, kinds, every field (arrays by dtype, shape and value), edges in order, every node's
    source order, inputs, outputs and metadata."""
    diffs = []
    na, nb = list(a.graph.nodes), list(b.graph.nodes)
    if na != nb:
        diffs.append(f"node order differs: {na} vs {nb}")
    for name in (n for n in na if n in b.graph):
        x, y = a.graph.nodes[name].get("node"), b.graph.nodes[name].get("node")
        if type(x) is not type(y):
            diffs.append(f"node {name!r}: kind {getattr(x, 'KIND', x)!r} vs {getattr(y, 'KIND', y)!r}")
            continue
        for spec in field_specs(type(x)):
            d = _value_diff(getattr(x, spec.name), getattr(y, spec.name))
            if d:
                diffs.append(f"node {name!r}, field {spec.name}: {d}")
        if list(a.graph.predecessors(name)) != list(b.graph.predecessors(name)):
            diffs.append(
                f"node {name!r}: sources {list(a.graph.predecessors(name))} vs {list(b.graph.predecessors(name))}"
            )
    ea, eb = list(a.graph.edges), list(b.graph.edges)
    if ea != eb:
        diffs.append(f"edges differ: {ea} vs {eb}")
    for field in ("inputs", "outputs"):
        if tuple(getattr(a, field)) != tuple(getattr(b, field)):
            diffs.append(f"{field} differ: {getattr(a, field)} vs {getattr(b, field)}")
    if dict(a.metadata) != dict(b.metadata):
        diffs.append(f"metadata differs: {dict(a.metadata)} vs {dict(b.metadata)}")
    return diffs


def programs_equal(a: Program, b: Program) -> bool:
    """Whether two programs are equal in every respect :func:`program_differences` checks."""
    return not program_differences(a, b)


def assert_programs_equal(a: Program, b: Program) -> None:
    """Raise ``AssertionError`` listing the differences, for tests."""
    diffs = program_differences(a, b)
    if diffs:
        raise AssertionError("programs differ:\n  " + "\n  ".join(diffs))
