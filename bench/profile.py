"""Summarise py-spy profiles: ``python -m bench.profile DIR [TOP]``.

``BENCH_PROFILE_DIR=DIR python -m bench --only pocketjobs,burndown`` runs every worker
process under ``py-spy record --gil --format raw`` (collapsed stacks of the thread holding
the GIL, one file per worker process). This prints, per file, the functions with the most
samples on CPU: *self* (the
function itself was running) and *total* (it was on the stack). Import-time stacks are
left out (they happen before the measurement starts).
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path


def summarize(path: Path, top: int = 15) -> str:
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        if any("importlib._bootstrap" in frame for frame in frames):
            continue  # start-up imports, before the measurement began
        samples += count
        own[frames[-1]] += count
        for frame in set(frames):
            total[frame] += count
    if not samples:
        return f"{path.name}: no samples\n"
    lines = [f"{path.name}: {samples} samples on CPU", "  self:"]
    lines += [f"    {100 * n / samples:5.1f}%  {frame}" for frame, n in own.most_common(top)]
    lines.append("  total (on the stack):")
    lines += [f"    {100 * n / samples:5.1f}%  {frame}" for frame, n in total.most_common(top)]
    return "\n".join(lines) + "\n"


def main() -> None:
    directory = Path(sys.argv[1] if len(sys.argv) > 1 else "bench/results/profiles")
    top = int(sys.argv[2]) if len(sys.argv) > 2 else 15
    for path in sorted(directory.glob("*.txt")):
        print(summarize(path, top))


if __name__ == "__main__":
    main()
