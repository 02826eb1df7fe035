"""The registry of webhook adapters: a plain dict from source name to adapter, filled from this package's own
modules and from the ``pipeline_bridge.adapters`` entry-point group.

A built-in source is any module of this package with an ``adapter`` attribute (modules whose names start with
``_``, such as the template, are skipped), so adding one is its module and its samples, nothing else.

A third party ships a source with ``pip install``: its package declares

    [options.entry_points]
    pipeline_bridge.adapters =
        mysource = mypackage.mysource:adapter

and the next app built finds it; nothing in ``bridge/`` changes. An entry point may name an adapter object, a
class (instantiated with no arguments) or a module with an ``adapter`` attribute.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from importlib.metadata import entry_points
from types import ModuleType
from typing import Any

import structlog

import adapters
from adapters.base import WebhookAdapter

log = structlog.get_logger(__name__)

ENTRY_POINT_GROUP = "pipeline_bridge.adapters"
# The name is a URL segment and the events.source column (40 characters).
NAME = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")


class AdapterError(Exception):
    """An object offered as an adapter that does not keep the contract."""


def as_adapter(candidate: Any) -> WebhookAdapter:
    """The adapter a module, class or object stands for, checked against the contract."""
    if isinstance(candidate, ModuleType):
        candidate = getattr(candidate, "adapter", None)
    elif isinstance(candidate, type):
        candidate = candidate()
    if not isinstance(candidate, WebhookAdapter):
        raise AdapterError("not a WebhookAdapter: it needs name, verify, parse and map")
    if not isinstance(candidate.name, str) or not NAME.match(candidate.name):
        raise AdapterError("its name must be 1-40 characters of a-z, 0-9, _ and -, starting with a letter")
    return candidate


def builtin_modules() -> list[ModuleType]:
    """This package's modules that hold an adapter, in name order (the contract, the target model, the Distelli
    translation and the template hold none)."""
    found = []
    for info in sorted(pkgutil.iter_modules(adapters.__path__), key=lambda info: info.name):
        if info.name.startswith("_") or info.ispkg:
            continue
        module = importlib.import_module(f"{adapters.__name__}.{info.name}")
        if hasattr(module, "adapter"):
            found.append(module)
    return found


def load_adapters() -> dict[str, WebhookAdapter]:
    """Every adapter available now: the built-in ones, then installed ones that do not reuse a built-in name.

    A broken third-party adapter is logged and left out rather than stopping the bridge, so one bad plugin
    cannot take every other source down.
    """
    registry: dict[str, WebhookAdapter] = {}
    for module in builtin_modules():
        adapter = as_adapter(module)
        registry[adapter.name] = adapter
    for entry_point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            adapter = as_adapter(entry_point.load())
        except (ImportError, AttributeError, AdapterError, TypeError) as exc:
            log.error("adapter.load_failed", entry_point=entry_point.name, error=str(exc))
            continue
        if adapter.name in registry:
            log.warning("adapter.name_taken", entry_point=entry_point.name, adapter=adapter.name)
            continue
        registry[adapter.name] = adapter
    return registry
