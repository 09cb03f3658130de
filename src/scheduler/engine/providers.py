"""Provider plugins for the v0.2 trust runtime (features.md §10.10): loading and calling them.

Providers come from two places, loaded once when the daemon starts, in this order (a later one
replaces an earlier one of the same type and name):

1. the entry points of the group ``openclaw_scheduler.providers`` of installed distributions,
   in the order of their names;
2. the ``*.py`` files of the directory ``SCHEDULER_PROVIDER_PATH``, in sorted order.

A provider plugin runs code inside the daemon, with the daemon's rights, so the directory is
refused as a whole when it is world-writable or owned by someone other than root or the daemon's
user (either could put code there, or make it writable), and a file is skipped for the same
reasons. Files are loaded by path under a private module name, never through ``sys.path``: the
daemon imports nothing from its working directory (or from the plugin directory itself).

Each module exposes ``provider`` (one object) or ``providers`` (several); an entry point names
one such object (or a module exposing them). An object has ``name`` and ``type`` (``identity``,
``authorization`` or ``proof-verifier``) and the methods of its type, under their Python names
(``resolve_session``) or the reference's (``resolveSession``). Methods may be plain functions
(run in a worker thread, so a slow one cannot stall the daemon) or coroutines (awaited); every
call is bounded by ``SCHEDULER_PROVIDER_TIMEOUT_MS``. A file or entry point that cannot be
loaded is logged and skipped; the others load.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import importlib.util
import inspect
import os
import re
import stat
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Final

ENTRY_POINT_GROUP: Final = "openclaw_scheduler.providers"
PROVIDER_TYPES: Final = ("identity", "authorization", "proof-verifier")
# The Python name of each contract method, and the reference's.
METHOD_NAMES: Final = {
    "validate_profile": "validateProfile",
    "resolve_session": "resolveSession",
    "materialize": "materialize",
    "cleanup": "cleanup",
    "prepare_handoff": "prepareHandoff",
    "describe_session": "describeSession",
    "authorize": "authorize",
    "verify_proof": "verifyProof",
}
REQUIRED_METHODS: Final = {
    "identity": ("resolve_session",),
    "authorization": ("authorize",),
    "proof-verifier": ("verify_proof",),
}
MODULE_PREFIX: Final = "_openclaw_scheduler_provider"


class ProviderCallError(Exception):
    """A provider method failed: it raised, timed out or does not exist. The message says which."""


@dataclass(frozen=True)
class Provider:
    name: str
    type: str
    target: Any  # the plugin's object
    origin: str  # the file or entry point it came from

    def method(self, name: str) -> Callable[..., Any] | None:
        for candidate in (name, METHOD_NAMES.get(name, name)):
            found: Callable[..., Any] | None = getattr(self.target, candidate, None)
            if callable(found):
                return found
        return None

    def has(self, name: str) -> bool:
        return self.method(name) is not None


class ProviderRegistry:
    def __init__(self, timeout_s: float = 10.0) -> None:
        self.timeout_s = timeout_s
        self._by_type: dict[str, dict[str, Provider]] = {kind: {} for kind in PROVIDER_TYPES}

    def register(self, provider: Provider) -> Provider | None:
        """Add ``provider``; the one of the same type and name it replaces, if any."""
        table = self._by_type[provider.type]
        replaced = table.get(provider.name)
        table[provider.name] = provider
        return replaced

    def identity(self, name: str | None) -> Provider | None:
        return self._by_type["identity"].get(name) if name else None

    def authorization(self, name: str | None) -> Provider | None:
        return self._by_type["authorization"].get(name) if name else None

    def proof_verifier(self, name: str | None) -> Provider | None:
        return self._by_type["proof-verifier"].get(name) if name else None

    def listing(self) -> list[dict[str, str]]:
        return [{"name": p.name, "type": p.type, "origin": p.origin}
                for table in self._by_type.values() for p in table.values()]

    async def call(self, provider: Provider, method: str, *args: Any) -> Any:
        """Call ``method`` of ``provider`` with ``args``, within the timeout. Raises
        ProviderCallError (never anything else but cancellation)."""
        function = provider.method(method)
        if function is None:
            raise ProviderCallError(f"provider {provider.name} has no {method}")
        try:
            async with asyncio.timeout(self.timeout_s):
                if inspect.iscoroutinefunction(function):
                    result = await function(*args)
                else:
                    result = await asyncio.to_thread(function, *args)
                if inspect.isawaitable(result):
                    result = await result
        except TimeoutError:
            raise ProviderCallError(
                f"provider {provider.name} {method} did not answer within {self.timeout_s:g}s"
            ) from None
        except ProviderCallError:
            raise
        except Exception as exc:  # a plugin's failure is an answer, never the daemon's crash
            raise ProviderCallError(str(exc) or type(exc).__name__) from exc
        return result


def load_providers(directory: Path | None, log: Any, *, timeout_s: float = 10.0,
                   entry_points: Iterable[importlib.metadata.EntryPoint] | None = None) -> ProviderRegistry:
    """The registry of every provider that loads (each failure is logged and skipped)."""
    registry = ProviderRegistry(timeout_s)
    points = installed_entry_points() if entry_points is None else list(entry_points)
    for point in sorted(points, key=lambda p: p.name):
        origin = f"entry point {point.name} ({point.value})"
        try:
            loaded = point.load()
        except Exception as exc:  # a broken plugin must not keep the daemon from starting
            log.error("provider.load_failed", origin=origin, error=repr(exc))
            continue
        _register_all(registry, loaded, origin, log)
    if directory is not None:
        _load_directory(registry, directory, log)
    log.info("provider.loaded", count=len(registry.listing()),
             providers=[f"{p['type']}:{p['name']}" for p in registry.listing()],
             directory=None if directory is None else str(directory))
    return registry


def installed_entry_points() -> list[importlib.metadata.EntryPoint]:
    return list(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))


def _load_directory(registry: ProviderRegistry, directory: Path, log: Any) -> None:
    path = directory.expanduser().absolute()
    refusal = directory_refusal(path)
    if refusal is not None:
        log.error("provider.directory_refused", directory=str(path), reason=refusal,
                  note="no provider loaded from it")
        return
    for index, file in enumerate(sorted(path.glob("*.py"))):
        problem = file_refusal(file)
        if problem is not None:
            log.error("provider.file_refused", file=str(file), reason=problem)
            continue
        try:
            module = _load_module(file, index)
        except Exception as exc:  # syntax errors, failing imports, anything the module raises
            log.error("provider.load_failed", origin=str(file), error=repr(exc))
            continue
        _register_all(registry, module, str(file), log)


def _trusted_owner(uid: int) -> bool:
    return uid in (0, os.geteuid())


def directory_refusal(path: Path) -> str | None:
    """Why the plugin directory cannot be trusted, or None."""
    return _refusal(path, stat.S_ISDIR, "not a directory")


def file_refusal(path: Path) -> str | None:
    """Why a plugin file cannot be trusted, or None."""
    return _refusal(path, stat.S_ISREG, "not a regular file")


def _refusal(path: Path, right_kind: Callable[[int], bool], wrong_kind: str) -> str | None:
    # Whoever can write (or chmod) the file or its directory can run code inside the daemon.
    try:
        info = path.stat()
    except OSError as exc:
        return f"cannot read it: {exc.strerror or exc}"
    if not right_kind(info.st_mode):
        return wrong_kind
    mode = stat.S_IMODE(info.st_mode)
    if mode & stat.S_IWOTH:
        return f"world-writable (mode {mode:04o}); fix: chmod o-w {path}"
    if not _trusted_owner(info.st_uid):
        return f"owned by uid {info.st_uid}, neither root nor the daemon's user"
    return None


def _load_module(path: Path, index: int) -> ModuleType:
    """Execute ``path`` as a module of its own, by path: nothing is looked up on sys.path."""
    stem = re.sub(r"\W", "_", path.stem)
    name = f"{MODULE_PREFIX}_{index}_{stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look their module up here
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def _register_all(registry: ProviderRegistry, loaded: Any, origin: str, log: Any) -> None:
    candidates = _candidates(loaded)
    if not candidates:
        log.error("provider.load_failed", origin=origin,
                  error="exposes no provider (a `provider` or `providers` attribute)")
        return
    for candidate in candidates:
        provider = _checked(candidate, origin)
        if isinstance(provider, str):
            log.error("provider.load_failed", origin=origin, error=provider)
            continue
        replaced = registry.register(provider)
        if replaced is not None:
            log.info("provider.replaced", name=provider.name, type=provider.type,
                     origin=origin, replaced=replaced.origin)


def _candidates(loaded: Any) -> list[Any]:
    if isinstance(loaded, ModuleType):
        if hasattr(loaded, "providers"):
            many = loaded.providers
            return list(many) if isinstance(many, list | tuple) else []
        return [loaded.provider] if hasattr(loaded, "provider") else []
    if isinstance(loaded, list | tuple):
        return list(loaded)
    return [loaded]


def _checked(candidate: Any, origin: str) -> Provider | str:
    """A Provider, or why ``candidate`` is not one."""
    name, kind = getattr(candidate, "name", None), getattr(candidate, "type", None)
    if not isinstance(name, str) or not name or not isinstance(kind, str) or not kind:
        return "a provider needs a non-empty `name` and `type`"
    if kind not in PROVIDER_TYPES:
        return f'provider {name}: unknown type "{kind}" (one of {", ".join(PROVIDER_TYPES)})'
    provider = Provider(name, kind, candidate, origin)
    missing = [m for m in REQUIRED_METHODS[kind] if not provider.has(m)]
    if missing:
        return f"provider {name} ({kind}) lacks {', '.join(missing)}"
    return provider
