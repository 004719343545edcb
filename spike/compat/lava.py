"""Import lava-nc 0.10.0 on Python 3.11+ without editing its files.

lava-nc 0.10.0 declares Python < 3.11. Installed anyway (``pip install --ignore-requires-python
lava-nc==0.10.0``), it fails at import in ``lava/magma/compiler/var_model.py``: dataclass fields
such as ``x: ByteEncoder = ByteEncoder()`` default to an instance of another (unhashable) dataclass,
which Python 3.11's ``dataclasses`` rejects as a mutable default.

Mechanism (the least invasive we found): :func:`ensure_lava` puts a one-module import hook (a
``sys.meta_path`` finder) in front of the normal finders for the duration of one import. For
``lava.magma.compiler.var_model`` only, the hook reads the module's source through the ordinary
path finder, rewrites each field whose default is a no-argument call of its own annotated type,
``name: T = T()``, into ``name: T = __import__("dataclasses").field(default_factory=T)`` (one
line for one line, so line numbers in tracebacks stay right), and executes that text as the
module, with the original file name. ``default_factory`` gives every object a fresh default (what
the original meant; a shared mutable default would be a bug). Nothing on disk changes, no other module is touched, ``dataclasses`` is not
relaxed, and the hook is removed again once the module is imported.

The hook is inert when it is not needed: if the module's source has no such field (a fixed lava
release), the hook declines and the normal loader imports the file as it is; if the module is
already imported, nothing is installed at all.

Second fix, also scoped to :func:`ensure_lava`'s imports: lava's
``message_infrastructure/multiprocessing.py`` calls ``multiprocessing.set_start_method('fork')`` at
import, which raises "context has already been set" in any process where the start method was
already fixed, e.g. by ``multiprocessing.get_start_method()`` (numba's parallel loops call it).
While lava is imported, ``multiprocessing.set_start_method`` is wrapped so that asking again for
the method already in force is a no-op (a different one still raises, and is reported); the
original function is put back right after.
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import multiprocessing
import re
import sys
import threading
from types import ModuleType

__all__ = [
    "LAVA_INSTALL_HINT", "LavaUnavailable", "SourcePatchFinder", "VAR_MODEL", "ensure_lava", "import_patched",
    "lava_available", "patch_source",
]

LAVA_INSTALL_HINT = "pip install --ignore-requires-python lava-nc==0.10.0"
VAR_MODEL = "lava.magma.compiler.var_model"

# ``<indent>name: T = T()`` with T a (dotted) name: a dataclass field defaulting to a fresh
# instance of its own type, which Python 3.11 refuses when T's instances are unhashable.
_INSTANCE_DEFAULT = re.compile(
    r"^(?P<head>[ \t]+(?P<name>[A-Za-z_]\w*)[ \t]*:[ \t]*(?P<type>[A-Za-z_][\w.]*)[ \t]*=[ \t]*)"
    r"(?P=type)\(\)(?P<tail>[ \t]*(?:#.*)?)$",
    re.MULTILINE,
)

_RUN_MODULES = (
    "lava.magma.core.run_configs",
    "lava.magma.core.run_conditions",
    "lava.magma.runtime.message_infrastructure.multiprocessing",  # sets the start method
    "lava.magma.runtime.runtime",
    "lava.proc.lif.process",
)
_LOCK = threading.Lock()
_STATE: dict[str, object] = {"patched": None}  # None until lava was imported through ensure_lava


class LavaUnavailable(ImportError):
    """lava-nc cannot be imported here; the message says why and how to install it."""


def patch_source(source: str) -> str | None:
    """The source with every ``name: T = T()`` field default turned into
    ``field(default_factory=T)``, or None when there is nothing to change (an already fixed
    module). Lines keep their numbers."""
    patched, n = _INSTANCE_DEFAULT.subn(
        lambda m: f'{m["head"]}__import__("dataclasses").field(default_factory={m["type"]}){m["tail"]}', source
    )
    return patched if n else None


class _PatchedSourceLoader(importlib.abc.Loader):
    """Executes rewritten source text as the module (compiled with the original file name)."""

    def __init__(self, fullname: str, origin: str, source: str) -> None:
        self.fullname, self.origin, self.source = fullname, origin, source

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return None  # the default module object

    def exec_module(self, module: ModuleType) -> None:
        exec(compile(self.source, self.origin, "exec", dont_inherit=True), module.__dict__)

    def get_source(self, fullname: str) -> str:
        return self.source


class SourcePatchFinder(importlib.abc.MetaPathFinder):
    """A meta path finder that serves one module from rewritten source (see the module doc).

    ``find_spec`` locates the real file with the ordinary path finder; when ``patch_source``
    finds nothing to rewrite it returns None, and the import proceeds exactly as without it.
    ``patched`` records whether it rewrote the module.
    """

    def __init__(self, fullname: str) -> None:
        self.fullname = fullname
        self.patched = False

    def find_spec(self, fullname: str, path=None, target=None):  # noqa: ANN001 - importlib protocol
        if fullname != self.fullname:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or not isinstance(spec.loader, importlib.machinery.SourceFileLoader):
            return None
        source = spec.loader.get_source(fullname)
        patched = patch_source(source) if source is not None else None
        if patched is None:
            return None  # already fixed: the normal loader imports the file unchanged
        self.patched = True
        return importlib.util.spec_from_file_location(
            fullname, spec.origin, loader=_PatchedSourceLoader(fullname, spec.origin, patched)
        )


def import_patched(fullname: str) -> tuple[ModuleType, bool]:
    """Import ``fullname`` through a :class:`SourcePatchFinder` installed for this one import.

    Returns the module and whether its source was rewritten (False: already imported, or its
    source needed no change)."""
    if fullname in sys.modules:
        return sys.modules[fullname], False
    finder = SourcePatchFinder(fullname)
    sys.meta_path.insert(0, finder)
    try:
        module = importlib.import_module(fullname)
    finally:
        sys.meta_path.remove(finder)
    return module, finder.patched


@contextlib.contextmanager
def _same_start_method_is_noop():
    """While active, ``multiprocessing.set_start_method(m)`` does nothing if ``m`` is already the
    start method in force (lava asks for ``fork`` at import; see the module docstring)."""
    original = multiprocessing.set_start_method

    def set_start_method(method, force=False):  # noqa: ANN001, ANN202 - multiprocessing's signature
        if not force and multiprocessing.get_start_method(allow_none=True) == method:
            return None
        return original(method, force=force)

    multiprocessing.set_start_method = set_start_method
    try:
        yield
    finally:
        multiprocessing.set_start_method = original


def lava_available() -> str | None:
    """None when lava-nc can be imported (through the shim), else why not, with the install hint."""
    try:
        ensure_lava()
    except LavaUnavailable as e:
        return str(e)
    return None


def ensure_lava() -> bool:
    """Make ``import lava...`` work on this Python; returns whether the shim rewrote lava's
    ``var_model`` (False where lava needs no fix or was imported before).

    Raises :class:`LavaUnavailable` naming the cause and the install command when lava-nc is
    missing or still cannot be imported.
    """
    with _LOCK:
        if _STATE["patched"] is not None:
            return bool(_STATE["patched"])
        if importlib.util.find_spec("lava") is None:
            raise LavaUnavailable(f"lava-nc is not installed; install it with: {LAVA_INSTALL_HINT}")
        try:
            with _same_start_method_is_noop():
                _, patched = import_patched(VAR_MODEL)
                # the modules a run needs, imported here so that a broken install fails early and clearly
                for name in _RUN_MODULES:
                    importlib.import_module(name)
        except ImportError as e:
            raise LavaUnavailable(
                f"lava-nc is installed but cannot be imported ({type(e).__name__}: {e}); "
                f"reinstall it with: {LAVA_INSTALL_HINT}"
            ) from e
        except (ValueError, TypeError, RuntimeError) as e:  # e.g. another dataclass or start-method clash
            raise LavaUnavailable(
                f"lava-nc failed to import on Python {sys.version_info[0]}.{sys.version_info[1]} "
                f"({type(e).__name__}: {e}); supported: lava-nc 0.10.0 installed with: {LAVA_INSTALL_HINT}"
            ) from e
        _STATE["patched"] = patched
        return patched
