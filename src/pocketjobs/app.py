"""The user-facing :class:`App`: the kernel plus its command line.

Like PocketBase's ``pocketbase.go`` wrapping ``core.BaseApp``, this module sits above the
kernel: it imports :mod:`pocketjobs.cli` (and through it :mod:`pocketjobs.apis`), which the
kernel in :mod:`pocketjobs.core` never does.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from pocketjobs.core.app import BaseApp

__all__ = ["App"]


class App(BaseApp):
    """A :class:`~pocketjobs.core.BaseApp` with a command line: :meth:`start`.

    Everything else (settings, hooks, ``db``, ``auth``, ``add_command``) is the kernel's.
    """

    def start(self, argv: Sequence[str] | None = None) -> None:
        """Run the command line (``serve``, ``worker``, ``superuser ...``) and exit.

        ``argv`` excludes the program name and defaults to ``sys.argv[1:]``. Always raises
        ``SystemExit`` with the command's exit code (see :func:`pocketjobs.cli.run_cli`).
        """
        from pocketjobs.cli import run_cli

        sys.exit(run_cli(self, sys.argv[1:] if argv is None else list(argv)))
