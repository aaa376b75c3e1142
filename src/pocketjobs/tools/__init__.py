"""Low-level, framework-independent building blocks (hooks and similar helpers).

Import from the submodules directly, e.g. ``from pocketjobs.tools.hook import Hook``.
"""

__all__: list[str] = []
