"""The library adapters: one module per library, one class per configuration (row)."""

from __future__ import annotations

import importlib

from bench.adapters.base import Adapter

__all__ = ["ADAPTER_MODULES", "Adapter", "all_adapters", "get_adapter"]

#: library -> module; modules import their library lazily, inside methods, so listing
#: adapters never needs the peers installed.
ADAPTER_MODULES = {
    "pocketjobs": "bench.adapters.pocketjobs_adapter",
    "pgqueuer": "bench.adapters.pgqueuer_adapter",
    "procrastinate": "bench.adapters.procrastinate_adapter",
    "huey": "bench.adapters.huey_adapter",
}


def all_adapters() -> list[type[Adapter]]:
    """Every configuration, in table order."""
    found: list[type[Adapter]] = []
    for module_name in ADAPTER_MODULES.values():
        module = importlib.import_module(module_name)
        found.extend(module.ADAPTERS)
    return found


def get_adapter(key: str) -> type[Adapter]:
    for adapter in all_adapters():
        if adapter.key == key:
            return adapter
    raise KeyError(f"unknown adapter {key!r}")
