"""Every code block in the docs runs as written.

The documents are :data:`DOCS`. Their fenced code blocks are extracted and run; nothing is
stubbed or mocked.

**Python** (```` ```python ````) blocks run in a fresh temporary directory (so ``App()``
writes its ``pb_data`` there) with this venv's interpreter, after two static checks: the
code compiles, and ``ruff`` finds no undefined name (F821), not even inside a function the
run never calls. A block that calls ``app.start()`` is a program: it runs as
``python block.py jobs stats`` (a one-shot command: bootstrap, migrations, handlers bound,
exit 0), since ``serve`` would never return.

**Files**: a python block whose first line is a file name comment (``# main.py``) is a
file. If a later shell block of the document names that file, the block is written into the
shell working directory for it (and gets only the static checks here); otherwise it runs
like any python block.

**Shell** (```` ```sh ````/```` ```bash ````) blocks of one document run in order, like
commands typed into one terminal: shell variables and exports carry over from block to
block (a ``cd`` does not). Each block runs with ``bash -euo pipefail``, the venv's ``bin``
first on ``PATH``, and neither ``PB_DATABASE_URL`` nor ``PB_JOBS_*`` inherited. The working
directory is a temporary stand-in for a checkout of this repository: ``.venv`` links to
this venv and ``examples/``, ``Makefile`` and ``pyproject.toml`` are copies, so
``.venv/bin/python examples/base/main.py ...`` works as written (and writes its data into
the copy). ``127.0.0.1:8090``, ``localhost:8090`` and ``0.0.0.0:8090`` are replaced by a
free port. Other blocks (``go``, ``text``, ``json``, no language ...) are not run.

**Markers** are HTML comments on the lines right before a fence (several may be stacked)::

    <!-- docs-test: skip (the reason) -->     not run. The reason is required; such a
                                              block is still syntax-checked (bash -n or
                                              compile) and listed with its reason.
    <!-- docs-test: continue -->              python: append to the previous python block
                                              and run both as one program.
    <!-- docs-test: setup NAME [NAME ...] --> python (also file blocks): prepend
                                              tests/docs_support/NAME.py to the code.
                                              shell: run ``python NAME.py`` in the working
                                              directory before the block.
    <!-- docs-test: check NAME [NAME ...] --> shell: run tests/docs_support/NAME.py in the
                                              working directory after the block; it must
                                              exit 0.
    <!-- docs-test: serve -->                 shell: the block works with a running app.
                                              Its ``python X.py serve|worker ...`` lines
                                              (and ``make serve``: the server command of its
                                              recipe) start in the background: ``serve`` on
                                              the free port, waited for until
                                              ``/api/health`` answers; ``worker`` until it
                                              logs that it started. If the block starts no
                                              server and none runs yet, the example app
                                              (examples/base/main.py) is served, with the
                                              docs' superuser admin@example.com /
                                              a-long-password. The processes run until the
                                              document's last block has run; then they must
                                              exit 0 on SIGTERM.

A shell block that would start a server without the ``serve`` marker fails at once (it
would hang). Unknown, malformed or misplaced markers fail :func:`test_markers_are_valid`.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from support import REPO_ROOT, free_port

DOCS = (
    "README.md",
    "src/pocketjobs/plugins/jobs/README.md",
    "docs/MIGRATION_JOBS_PLUGIN.md",
)
MIGRATION_GUIDE = "docs/MIGRATION_JOBS_PLUGIN.md"
SUPPORT_DIR = Path(__file__).resolve().parents[1] / "docs_support"
VENV_BIN = Path(sys.executable).parent
PYTHON_LANGS = frozenset({"python", "py", "python3"})
SHELL_LANGS = frozenset({"sh", "bash", "shell"})
MARKER_KINDS = frozenset({"skip", "continue", "setup", "check", "serve"})
#: The app served for a ``serve`` block that starts none, and the docs' superuser.
EXAMPLE_APP = "examples/base/main.py"
DOCS_SUPERUSER = ("admin@example.com", "a-long-password")
#: Seconds any one command may take.
COMMAND_TIMEOUT = 120
#: Seconds a background server gets to become ready, and to exit after SIGTERM.
SERVER_TIMEOUT = 30

_FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^\s`]*)")
_MARKER = re.compile(r"^\s*<!--\s*docs-test:\s*(?P<body>.*?)\s*-->\s*$")
_ANY_MARKER = re.compile(r"<!--\s*docs-test")
_FILE_COMMENT = re.compile(r"^#\s*(?P<name>[\w.-]+\.py)\s*$")
_APP_START = re.compile(r"^\s*app\.start\(\)", re.MULTILINE)
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_DEFAULT_ADDRESS = re.compile(r"\b(?:127\.0\.0\.1|localhost|0\.0\.0\.0):8090\b")

# Saves the variables a block defined, for the next block (a terminal keeps them too).
_SHELL_PRELUDE = r"""
__docs_test_save() {
  local __name
  for __name in $(compgen -v); do
    case "$__name" in
      __*|BASH*|FUNCNAME|PIPESTATUS|LINENO|RANDOM|SRANDOM|SECONDS|EPOCH*|_) continue ;;
    esac
    grep -qxF -- "$__name" "$DOCS_TEST_BASELINE" || declare -p -- "$__name"
  done > "$DOCS_TEST_STATE.new"
  mv -- "$DOCS_TEST_STATE.new" "$DOCS_TEST_STATE"
}
source "$DOCS_TEST_STATE"
"""


# --------------------------------------------------------------------------- parsing


@dataclass(frozen=True)
class Marker:
    kind: str
    arg: str
    line: int


@dataclass
class Block:
    doc: str
    line: int  # the opening fence, 1-based
    lang: str
    code: str
    markers: tuple[Marker, ...] = ()

    @property
    def id(self) -> str:
        return f"{self.doc}:{self.line}"

    def has(self, kind: str) -> bool:
        return any(m.kind == kind for m in self.markers)

    def names(self, kind: str) -> list[str]:
        return [name for m in self.markers if m.kind == kind for name in m.arg.split()]

    @property
    def skip_reason(self) -> str | None:
        for marker in self.markers:
            if marker.kind == "skip":
                return marker.arg.strip()[1:-1].strip()
        return None

    @property
    def is_python(self) -> bool:
        return self.lang in PYTHON_LANGS

    @property
    def is_shell(self) -> bool:
        return self.lang in SHELL_LANGS

    @property
    def file_name(self) -> str | None:
        """``main.py`` for a python block whose first line is ``# main.py``."""
        if not self.is_python:
            return None
        match = _FILE_COMMENT.match(self.code.split("\n", 1)[0])
        return match["name"] if match else None


@dataclass
class PythonProgram:
    """Python blocks run as one program: a block and the ``continue`` blocks after it."""

    blocks: list[Block]

    @property
    def id(self) -> str:
        return self.blocks[0].id

    @property
    def what(self) -> str:
        return " + ".join(b.id for b in self.blocks)

    def source(self) -> str:
        parts = [
            f"# ---- docs-test setup {name} ----\n{(SUPPORT_DIR / f'{name}.py').read_text()}"
            for name in self.blocks[0].names("setup")
        ]
        if not parts and len(self.blocks) == 1:
            return self.blocks[0].code
        parts += [f"# ---- {block.id} ----\n{block.code}" for block in self.blocks]
        return "\n".join(parts)


@dataclass
class Doc:
    path: str
    blocks: list[Block] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def runnable(self) -> list[Block]:
        return [b for b in self.blocks if (b.is_python or b.is_shell) and not b.has("skip")]

    def shell_blocks(self) -> list[Block]:
        return [b for b in self.blocks if b.is_shell and not b.has("skip")]

    def skipped(self) -> list[Block]:
        return [b for b in self.blocks if b.has("skip")]

    def is_shell_file(self, block: Block) -> bool:
        """Whether ``block`` is a file block that a later shell block runs."""
        if block.file_name is None or block.has("skip"):
            return False
        word = re.compile(rf"(?<![\w./-]){re.escape(block.file_name)}(?![\w.-])")
        return any(word.search(b.code) for b in self.shell_blocks() if b.line > block.line)

    def shell_files(self) -> list[Block]:
        return [b for b in self.blocks if self.is_shell_file(b)]

    def programs(self) -> list[PythonProgram]:
        programs: list[PythonProgram] = []
        previous: PythonProgram | None = None
        for block in self.blocks:
            if not block.is_python:
                continue
            if block.has("skip") or self.is_shell_file(block):
                previous = None
            elif block.has("continue") and previous is not None:
                previous.blocks.append(block)
            else:
                previous = PythonProgram([block])
                programs.append(previous)
        return programs


def _parse_marker(body: str, path: str, line: int, problems: list[str]) -> Marker:
    kind, _, arg = body.partition(" ")
    arg = arg.strip()
    where = f"{path}:{line}"
    if kind not in MARKER_KINDS:
        problems.append(f"{where}: unknown docs-test marker {kind!r}")
    elif kind == "skip":
        if not (arg.startswith("(") and arg.endswith(")") and arg[1:-1].strip()):
            problems.append(f"{where}: give the reason: <!-- docs-test: skip (why) -->")
    elif kind in ("continue", "serve"):
        if arg:
            problems.append(f"{where}: {kind} takes no argument, got {arg!r}")
    elif not arg:
        problems.append(f"{where}: {kind} needs the name of a file in tests/docs_support")
    else:
        for name in arg.split():
            if not (SUPPORT_DIR / f"{name}.py").is_file():
                problems.append(f"{where}: tests/docs_support/{name}.py does not exist")
    return Marker(kind, arg, line)


def parse_doc(path: str) -> Doc:
    """The fenced code blocks of ``path`` (relative to the repository) and their markers."""
    doc = Doc(path)
    lines = (REPO_ROOT / path).read_text(encoding="utf-8").splitlines()
    pending: list[Marker] = []
    i = 0
    while i < len(lines):
        fence = _FENCE.match(lines[i])
        if fence:
            indent, mark = len(fence["indent"]), fence["fence"]
            body: list[str] = []
            j = i + 1
            while j < len(lines):
                stripped = lines[j].strip()
                if stripped.startswith(mark) and set(stripped) == {mark[0]}:
                    break
                text = lines[j]
                body.append(text[indent:] if not text[:indent].strip() else text.lstrip())
                j += 1
            else:
                doc.problems.append(f"{path}:{i + 1}: code fence never closed")
            code = "\n".join(body) + "\n"
            doc.blocks.append(Block(path, i + 1, fence["info"].lower(), code, tuple(pending)))
            pending = []
            i = j + 1
            continue
        marker = _MARKER.match(lines[i])
        if marker:
            pending.append(_parse_marker(marker["body"], path, i + 1, doc.problems))
        else:
            if _ANY_MARKER.search(lines[i]):
                doc.problems.append(f"{path}:{i + 1}: malformed docs-test marker {lines[i]!r}")
            if pending:
                doc.problems.append(
                    f"{path}:{pending[0].line}: a docs-test marker must be right before a fence"
                )
                pending = []
        i += 1
    if pending:
        doc.problems.append(f"{path}:{pending[0].line}: docs-test marker after the last block")
    _check_block_markers(doc)
    return doc


def _check_block_markers(doc: Doc) -> None:
    previous_python: Block | None = None
    for block in doc.blocks:
        kinds = [m.kind for m in block.markers]
        if not (block.is_python or block.is_shell) and set(kinds) - {"skip"}:
            doc.problems.append(
                f"{block.id}: {block.lang or 'plain'} blocks are not run; markers: {kinds}"
            )
        if "skip" in kinds and len(kinds) > 1:
            doc.problems.append(f"{block.id}: a skipped block takes no other marker: {kinds}")
        if block.is_shell and "continue" in kinds:
            doc.problems.append(f"{block.id}: continue is for python blocks")
        if not block.is_python:
            continue
        for kind in ("serve", "check"):
            if kind in kinds:
                doc.problems.append(f"{block.id}: {kind} is for shell blocks")
        if "continue" in kinds:
            if block.file_name:
                doc.problems.append(
                    f"{block.id}: a file block (# {block.file_name}) cannot continue"
                )
            if "setup" in kinds:
                doc.problems.append(f"{block.id}: put setup on the first block of the program")
            if previous_python is None:
                doc.problems.append(f"{block.id}: continue, but no python block before it")
            elif previous_python.has("skip") or doc.is_shell_file(previous_python):
                doc.problems.append(
                    f"{block.id}: continue after {previous_python.id}, which does not run here"
                )
        previous_python = block


PARSED: dict[str, Doc] = {d: parse_doc(d) for d in DOCS if (REPO_ROOT / d).is_file()}


def _params(items: list[tuple[str, object]]) -> list[object]:
    return [pytest.param(item, id=item_id) for item_id, item in items]


# --------------------------------------------------------------------------- running


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Our environment without PB_DATABASE_URL/PB_JOBS_*, with the venv first on PATH."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k != "PB_DATABASE_URL" and not k.startswith("PB_JOBS_")
    }
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    # curl and httpx must reach the local servers directly, whatever proxy is configured.
    local = "127.0.0.1,localhost"
    for name in ("NO_PROXY", "no_proxy"):
        env[name] = f"{env[name]},{local}" if env.get(name) else local
    env.update(extra or {})
    return env


def _show(proc: subprocess.CompletedProcess[str]) -> str:
    return (
        f"exit code {proc.returncode}\n--- stdout ---\n{proc.stdout}--- stderr ---\n{proc.stderr}"
    )


def _numbered(source: str) -> str:
    return "\n".join(f"{n:4} | {line}" for n, line in enumerate(source.splitlines(), 1))


def run_python_file(
    script: Path, *args: str, cwd: Path, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(script), *args],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )


def static_check(source: str, path: Path, what: str) -> None:
    """Write ``source`` to ``path``; it must compile and use no undefined name (F821)."""
    try:
        compile(source, str(path), "exec")
    except SyntaxError as exc:
        pytest.fail(f"{what} does not compile: {exc}\n{_numbered(source)}")
    path.write_text(source, encoding="utf-8")
    ruff = subprocess.run(
        [
            str(VENV_BIN / "ruff"),
            *("check", "--isolated", "--no-cache", "--select", "F821"),
            *("--output-format", "concise", str(path)),
        ],
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )
    if ruff.returncode != 0:
        pytest.fail(
            f"{what} uses undefined names:\n{ruff.stdout}{ruff.stderr}\n{_numbered(source)}"
        )


def _logical_lines(code: str) -> list[str]:
    """Shell lines with backslash continuations joined."""
    lines: list[str] = []
    current = ""
    for line in code.splitlines():
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        lines.append(current + line)
        current = ""
    if current:
        lines.append(current)
    return lines


def _split_command(line: str) -> tuple[dict[str, str], list[str]]:
    """``VAR=x python main.py serve &  # note`` → ``({"VAR": "x"}, [python, main.py, serve])``."""
    try:
        tokens = shlex.split(line, comments=True)
    except ValueError:
        return {}, []
    assignments: dict[str, str] = {}
    while tokens and _ASSIGNMENT.match(tokens[0]):
        name, _, value = tokens.pop(0).partition("=")
        assignments[name] = value
    if tokens and tokens[-1] == "&":
        tokens.pop()
    return assignments, tokens


def _app_command(tokens: list[str]) -> str | None:
    """The app command of ``python script.py [--dir D] [--db U] COMMAND ...``, or None."""
    if len(tokens) < 2 or not Path(tokens[0]).name.startswith("python"):
        return None
    rest = tokens[2:]
    i = 0
    while i < len(rest):
        if rest[i] in ("--dir", "--db", "--http"):
            i += 2
        elif rest[i].startswith("-"):
            i += 1
        else:
            return rest[i]
    return None


def _is_server_line(line: str) -> bool:
    _, tokens = _split_command(line)
    if tokens[:1] == ["make"]:
        return "serve" in tokens[1:]
    return _app_command(tokens) in ("serve", "worker")


@dataclass
class Background:
    """A process a ``serve`` block started."""

    command: str  # serve | worker
    label: str  # the command line
    proc: subprocess.Popen[bytes]
    log: Path


class ShellSession:
    """One document's shell blocks and shell files, in one working directory."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.port = free_port()
        self.servers: list[Background] = []
        # A stand-in for a checkout of the repository.
        (work / ".venv").symlink_to(Path(sys.prefix), target_is_directory=True)
        shutil.copytree(
            REPO_ROOT / "examples",
            work / "examples",
            ignore=shutil.ignore_patterns("pb_data", "__pycache__"),
        )
        for name in ("Makefile", "pyproject.toml"):
            shutil.copy2(REPO_ROOT / name, work / name)
        state = work / ".docs-test-state.sh"
        state.write_text("")
        baseline = work / ".docs-test-baseline"
        self.env = clean_env({"DOCS_TEST_STATE": str(state), "DOCS_TEST_BASELINE": str(baseline)})
        names = subprocess.run(
            ["bash", "--noprofile", "--norc", "-c", "compgen -v"],
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        baseline.write_text(names)

    # -- steps -----------------------------------------------------------------------

    def write_file(self, block: Block) -> None:
        assert block.file_name is not None
        (self.work / block.file_name).write_text(PythonProgram([block]).source())
        print(f"==== {block.id}: wrote {block.file_name}")

    def run_block(self, block: Block) -> None:
        for name in block.names("setup"):
            self._support(name, f"{block.id}: setup {name}")
        code = _DEFAULT_ADDRESS.sub(f"127.0.0.1:{self.port}", block.code)
        lines = _logical_lines(code)
        servers = [line for line in lines if _is_server_line(line)]
        if not block.has("serve"):
            if servers:
                pytest.fail(
                    f"{block.id}: `{servers[0].strip()}` starts a server and would never "
                    "return: mark the block <!-- docs-test: serve --> (or skip it with a reason)"
                )
            self._bash(code, block)
        else:
            if not servers and not self.servers:
                self._serve_example_app(block)
            chunk: list[str] = []
            for line in lines:
                if not _is_server_line(line):
                    chunk.append(line)
                    continue
                if chunk:
                    self._bash("\n".join(chunk), block)
                    chunk = []
                self._start_server(line, block)
            if chunk:
                self._bash("\n".join(chunk), block)
        for name in block.names("check"):
            self._support(name, f"{block.id}: check {name}")

    def close(self) -> list[str]:
        """Stop the background processes with SIGTERM; return what went wrong."""
        problems: list[str] = []
        for server in self.servers:
            if server.proc.poll() is None:
                server.proc.send_signal(signal.SIGTERM)
                try:
                    server.proc.wait(SERVER_TIMEOUT)
                except subprocess.TimeoutExpired:
                    server.proc.kill()
                    server.proc.wait()
                    problems.append(f"`{server.label}` did not stop within {SERVER_TIMEOUT} s")
            if server.proc.returncode != 0:
                problems.append(
                    f"`{server.label}` exited with {server.proc.returncode} (expected 0 after "
                    f"SIGTERM)\n{server.log.read_text(errors='replace')}"
                )
        self.servers.clear()
        return problems

    # -- helpers ---------------------------------------------------------------------

    def _logs(self) -> str:
        return "".join(
            f"\n--- log of `{server.label}` ---\n{server.log.read_text(errors='replace')}"
            for server in self.servers
        )

    def _shell_env(self) -> dict[str, str]:
        """The environment after the blocks so far (their exports included)."""
        dump = subprocess.run(
            ["bash", "--noprofile", "--norc", "-c", 'source "$DOCS_TEST_STATE" && env -0'],
            env=self.env,
            capture_output=True,
            check=True,
        ).stdout.decode()
        return dict(item.split("=", 1) for item in dump.split("\0") if "=" in item)

    def _support(self, name: str, what: str) -> None:
        proc = run_python_file(SUPPORT_DIR / f"{name}.py", cwd=self.work, env=self._shell_env())
        print(f"==== {what}\n{proc.stdout}{proc.stderr}")
        if proc.returncode != 0:
            pytest.fail(f"{what} failed: {_show(proc)}{self._logs()}")

    def _bash(self, script: str, block: Block) -> None:
        print(f"==== {block.id}: bash\n{script}")
        proc = subprocess.run(
            [
                *("bash", "--noprofile", "--norc", "-euo", "pipefail", "-c"),
                f"{_SHELL_PRELUDE}\n{script}\n__docs_test_save\n",
            ],
            cwd=self.work,
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )
        print(proc.stdout, proc.stderr, sep="\n")
        if proc.returncode != 0:
            pytest.fail(f"{block.id}: shell block failed:\n{script}\n{_show(proc)}{self._logs()}")

    def _serve_example_app(self, block: Block) -> None:
        email, password = DOCS_SUPERUSER
        print(f"==== {block.id}: no server runs: serving {EXAMPLE_APP} (superuser {email})")
        proc = run_python_file(
            self.work / EXAMPLE_APP,
            "superuser",
            "upsert",
            email,
            password,
            cwd=self.work,
            env=self._shell_env(),
        )
        if proc.returncode != 0:
            pytest.fail(f"{block.id}: creating the docs' superuser failed: {_show(proc)}")
        self._start_server(f"python {EXAMPLE_APP} serve", block)

    def _start_server(self, line: str, block: Block) -> None:
        assignments, tokens = _split_command(line)
        if tokens[:1] == ["make"]:
            recipe = subprocess.run(
                ["make", "-n", "-s", *tokens[1:]],
                cwd=self.work,
                env=self.env,
                capture_output=True,
                text=True,
                check=False,
            ).stdout
            commands = [c for c in _logical_lines(recipe) if _is_server_line(c)]
            if not commands:
                pytest.fail(f"{block.id}: `{line.strip()}` runs no server:\n{recipe}")
            for command in commands:
                self._start_server(command, block)
            return
        command = _app_command(tokens)
        if command not in ("serve", "worker"):
            pytest.fail(f"{block.id}: cannot run `{line.strip()}` in the background")
        if command == "serve":
            if any(server.command == "serve" for server in self.servers):
                pytest.fail(f"{block.id}: `{line.strip()}`: a server already runs on the port")
            if "--http" in tokens:
                tokens[tokens.index("--http") + 1] = f"127.0.0.1:{self.port}"
            else:
                tokens += ["--http", f"127.0.0.1:{self.port}"]
        log = self.work / f".docs-test-{command}-{len(self.servers) + 1}.log"
        print(f"==== {block.id}: in the background: {shlex.join(tokens)} (log {log.name})")
        with log.open("wb") as out:
            proc = subprocess.Popen(
                tokens,
                cwd=self.work,
                env={**self._shell_env(), **assignments},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.servers.append(Background(command, shlex.join(tokens), proc, log))
        deadline = time.monotonic() + SERVER_TIMEOUT
        while not self._ready(command, log):
            if proc.poll() is not None:
                pytest.fail(f"{block.id}: `{line.strip()}` exited early{self._logs()}")
            if time.monotonic() > deadline:
                pytest.fail(f"{block.id}: `{line.strip()}` not ready in time{self._logs()}")
            time.sleep(0.05)

    def _ready(self, command: str, log: Path) -> bool:
        if command == "worker":
            return "Worker started" in log.read_text(errors="replace")
        try:
            response = httpx.get(f"http://127.0.0.1:{self.port}/api/health", timeout=2)
        except httpx.HTTPError:
            return False
        return response.status_code == 200


# --------------------------------------------------------------------------- tests


def test_docs_exist() -> None:
    missing = [d for d in DOCS if not (REPO_ROOT / d).is_file()]
    assert not missing, f"documents missing: {missing}"


@pytest.mark.parametrize("doc", _params([(d, PARSED[d]) for d in PARSED]))
def test_markers_are_valid(doc: Doc) -> None:
    """Markers are known, well formed and placed right before a block that can take them;
    every skip has a reason (the skipped blocks are listed here too)."""
    for block in doc.skipped():
        print(f"skipped {block.id} ({block.lang or 'plain'}): {block.skip_reason}")
    assert not doc.problems, "\n".join(doc.problems)
    assert doc.runnable(), f"{doc.path} has no runnable code block"


_SKIPPED = [(b.id, b) for d in PARSED.values() for b in d.skipped()]


@pytest.mark.parametrize("block", _params(_SKIPPED))
def test_block_not_run_is_still_well_formed(block: Block) -> None:
    """A block marked not to run (its reason is listed by test_markers_are_valid) still has
    to parse: bash -n for shell, compile() for Python."""
    assert block.skip_reason, block.id
    if block.is_python:
        compile(block.code, block.id, "exec")
    elif block.lang in ("sh", "bash", "shell", "console"):
        checked = subprocess.run(
            ["bash", "-n"], input=block.code, text=True, capture_output=True, check=False
        )
        assert checked.returncode == 0, f"{block.id}: {checked.stderr}"


_PROGRAMS = [(p.id, p) for d in PARSED.values() for p in d.programs()]


@pytest.mark.parametrize("program", _params(_PROGRAMS))
def test_python_block(program: PythonProgram, tmp_path: Path) -> None:
    """A python block (with its setup and continuations) runs and exits 0."""
    work = tmp_path / "work"
    work.mkdir()
    source = program.source()
    script = work / "docs_block.py"
    static_check(source, script, program.what)
    args = ["jobs", "stats"] if _APP_START.search(source) else []
    proc = run_python_file(script, *args, cwd=work, env=clean_env())
    print(proc.stdout, proc.stderr, sep="\n")
    assert proc.returncode == 0, f"{program.what} failed: {_show(proc)}\n{_numbered(source)}"


_SHELL_FILES = [(b.id, b) for d in PARSED.values() for b in d.shell_files()]


@pytest.mark.parametrize("block", _params(_SHELL_FILES))
def test_shell_file_is_valid_python(block: Block, tmp_path: Path) -> None:
    """A file block that shell blocks run compiles and uses no undefined name."""
    assert block.file_name is not None
    static_check(PythonProgram([block]).source(), tmp_path / block.file_name, block.id)


_SESSIONS = [(d.path, d) for d in PARSED.values() if d.shell_blocks()]


@pytest.mark.timeout(600)
@pytest.mark.parametrize("doc", _params(_SESSIONS))
def test_shell_blocks(doc: Doc, tmp_path: Path) -> None:
    """The document's shell blocks run in order, with its files in place."""
    work = tmp_path / "work"
    work.mkdir()
    session = ShellSession(work)
    passed = False
    try:
        for block in doc.blocks:
            if doc.is_shell_file(block):
                session.write_file(block)
            elif block.is_shell and not block.has("skip"):
                session.run_block(block)
        passed = True
    finally:
        problems = session.close()
    if passed:
        assert not problems, "\n".join(problems)


# --------------------------------------------------------------------------- the copy script


def _copy_script() -> Block:
    guide = PARSED.get(MIGRATION_GUIDE)
    assert guide is not None, f"{MIGRATION_GUIDE} is missing"
    found = [b for b in guide.shell_files() if b.file_name == "copy_old_jobs.py"]
    assert len(found) == 1, "the migration guide must have one `# copy_old_jobs.py` block"
    return found[0]


def test_copy_script_moves_old_jobs(db_url: str | None, tmp_path: Path) -> None:
    """The guide's copy script, run for real on an old database in the seed's schema (a
    SQLite file, or a fresh PostgreSQL database), moves exactly its pending and failed jobs
    into a new store, keeping topic, payload, run_at and max_retries."""
    old = db_url or "old_pb_data/data.db"
    work = tmp_path / "work"
    work.mkdir()
    script = work / "copy_old_jobs.py"
    script.write_text(_copy_script().code, encoding="utf-8")
    env = clean_env()
    for step, arg in [
        (SUPPORT_DIR / "seed_old_db.py", old),
        (script, old),
        (SUPPORT_DIR / "check_copied_jobs.py", old),
    ]:
        proc = run_python_file(step, arg, cwd=work, env=env)
        print(proc.stdout, proc.stderr, sep="\n")
        assert proc.returncode == 0, f"{step.name} {arg}: {_show(proc)}"
        if step == script:
            assert "copied 5 jobs in 4 batches" in proc.stdout

    # Without arguments it prints its usage and fails.
    proc = run_python_file(script, cwd=work, env=env)
    assert proc.returncode == 1
    assert "usage: python copy_old_jobs.py OLD" in proc.stderr
