"""docs-test setup ``deliver``: a real ``deliver(to, subject)`` for the manual's handlers.

It records every delivery in ``deliveries`` and appends it to ``deliveries.jsonl`` in the
working directory, so a handler that calls it has an observable effect.
"""

import json
from pathlib import Path

deliveries: list[tuple[str, str]] = []


def deliver(to: str, subject: str) -> None:
    """Record one delivery (in memory and in ``deliveries.jsonl``)."""
    deliveries.append((to, subject))
    with Path("deliveries.jsonl").open("a", encoding="utf-8") as out:
        out.write(json.dumps({"to": to, "subject": subject}) + "\n")
