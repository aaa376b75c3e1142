"""Each package's public surface is explicit: ``__all__`` lists exactly what it exports."""

from __future__ import annotations

import ast
import importlib
import json
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


def test_the_app_split() -> None:
    """``pocketjobs.App`` (with ``start()``) wraps the kernel's ``pocketjobs.core.BaseApp``."""
    import pocketjobs
    import pocketjobs.core
    from pocketjobs.app import App

    assert pocketjobs.__all__ == ["App", "__version__"]
    assert pocketjobs.App is App
    assert "BaseApp" in pocketjobs.core.__all__
    assert "App" not in pocketjobs.core.__all__
    assert not hasattr(pocketjobs.core, "App")
    assert issubclass(App, pocketjobs.core.BaseApp)
    assert not hasattr(pocketjobs.core.BaseApp, "start")
    assert callable(App.start)


# Modules the kernel (pocketjobs.core) must never import: they import the kernel.
_ABOVE_THE_KERNEL = ("pocketjobs.cli", "pocketjobs.apis", "pocketjobs.app")


def _is_above_the_kernel(module: str) -> bool:
    return any(module == name or module.startswith(name + ".") for name in _ABOVE_THE_KERNEL)


def _imported_modules(source: str, module: str, *, is_package: bool) -> set[str]:
    """Every module ``source`` (the code of ``module``) may import, found anywhere in it:
    at the top, inside functions, under ``if TYPE_CHECKING:``, and string arguments of
    ``importlib.import_module(...)`` / ``__import__(...)``. ``from X import y`` yields both
    ``X`` and ``X.y`` (``y`` may be a submodule); relative imports are resolved."""
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base_parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join([*base_parts, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            first = node.args[0]
            is_import = name in ("import_module", "__import__")
            if is_import and isinstance(first, ast.Constant) and isinstance(first.value, str):
                found.add(first.value)
    return found


def _forbidden_imports(source: str, module: str, *, is_package: bool = False) -> set[str]:
    imported = _imported_modules(source, module, is_package=is_package)
    forbidden = {name for name in imported if _is_above_the_kernel(name)}
    # ``from pocketjobs import App`` loads pocketjobs.app just the same.
    if "pocketjobs.App" in imported:
        forbidden.add("pocketjobs.App")
    return forbidden


@pytest.mark.parametrize(
    "source",
    [
        "import pocketjobs.cli",
        "from pocketjobs.apis.server import prepare_serve",
        "from pocketjobs import cli",
        "from pocketjobs import App",
        "from pocketjobs.app import App",
        "def start():\n    from pocketjobs.cli import run_cli\n",
        "import typing\nif typing.TYPE_CHECKING:\n    from pocketjobs.apis import Rule\n",
        "from ... import apis",
        "from ...cli import run_cli",
        "import importlib\nimportlib.import_module('pocketjobs.cli')",
    ],
)
def test_the_import_checker_finds_upward_imports(source: str) -> None:
    """The static check below sees imports wherever they hide."""
    assert _forbidden_imports(source, "pocketjobs.core.sub.mod") != set()


def test_the_import_checker_allows_kernel_imports() -> None:
    source = (
        "from pocketjobs.core.db import Database\nfrom . import events\n"
        "from pocketjobs.tools.hook import Hook\nimport pocketjobs.core.application_x\n"
    )
    assert _forbidden_imports(source, "pocketjobs.core.app") == set()


def test_the_kernel_never_imports_cli_or_apis_statically() -> None:
    """No module under pocketjobs.core imports pocketjobs.cli, pocketjobs.apis or
    pocketjobs.app, not even inside a function or an ``if TYPE_CHECKING:`` block."""
    from pathlib import Path

    core = Path(importlib.import_module("pocketjobs.core").__file__ or "").parent
    modules = sorted(core.rglob("*.py"))
    assert core / "app.py" in modules
    offenders: dict[str, set[str]] = {}
    for path in modules:
        rel = path.relative_to(core.parent).with_suffix("")
        is_package = rel.name == "__init__"
        parts = rel.parts[:-1] if is_package else rel.parts
        name = ".".join(["pocketjobs", *parts])
        bad = _forbidden_imports(path.read_text(encoding="utf-8"), name, is_package=is_package)
        if bad:
            offenders[name] = bad
    assert offenders == {}


def test_importing_the_kernel_loads_neither_cli_nor_apis() -> None:
    """In a fresh interpreter, importing pocketjobs.core (and every module under it) leaves
    pocketjobs.cli and pocketjobs.apis out of ``sys.modules``."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    src = Path(importlib.import_module("pocketjobs").__file__ or "").parent.parent
    script = (
        "import importlib, json, pkgutil, sys\n"
        "def loaded():\n"
        "    above = (['pocketjobs', 'cli'], ['pocketjobs', 'apis'])\n"
        "    return sorted(m for m in sys.modules if m.split('.')[:2] in above)\n"
        "import pocketjobs.core\n"
        "after_core = loaded()\n"
        "for info in pkgutil.walk_packages(pocketjobs.core.__path__, 'pocketjobs.core.'):\n"
        "    importlib.import_module(info.name)\n"
        "print(json.dumps({'file': pocketjobs.core.__file__, 'core': after_core,\n"
        "                  'all': loaded()}))\n"
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(src), env.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert Path(report["file"]).resolve().is_relative_to(src.resolve())
    assert report["core"] == []
    assert report["all"] == []
