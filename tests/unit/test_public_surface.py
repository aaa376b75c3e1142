"""Each package's public surface is explicit: ``__all__`` lists exactly what it exports."""

from __future__ import annotations

import importlib
import types

import pytest

PACKAGES = [
    "pocketjobs",
    "pocketjobs.core",
    "pocketjobs.apis",
    "pocketjobs.tools.hook",
    "pocketjobs.plugins.jobs",
]


@pytest.mark.parametrize("name", PACKAGES)
def test_all_names_exist_once(name: str) -> None:
    module = importlib.import_module(name)
    exported = list(module.__all__)
    assert len(exported) == len(set(exported)), f"duplicates in {name}.__all__"
    missing = [n for n in exported if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ names missing attributes: {missing}"


@pytest.mark.parametrize("name", [p for p in PACKAGES if p != "pocketjobs.tools.hook"])
def test_every_public_import_is_exported(name: str) -> None:
    """A package re-exports on purpose: every public name it binds is in ``__all__``."""
    module = importlib.import_module(name)
    public = {
        attr
        for attr, value in vars(module).items()
        if not attr.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert public - set(module.__all__) == set(), f"{name} binds names not in __all__"


def test_the_kernel_never_imports_the_plugin() -> None:
    """SPEC §2: the kernel (core, apis, tools, cli) does not depend on plugins."""
    from pathlib import Path

    root = Path(importlib.import_module("pocketjobs").__file__ or "").parent
    offenders = [
        str(path.relative_to(root))
        for path in root.rglob("*.py")
        if "plugins" not in path.relative_to(root).parts
        and "pocketjobs.plugins" in path.read_text(encoding="utf-8")
    ]
    assert offenders == []
