"""Enqueues the same unique key again and again, for the uniqueness test across processes.

    python tests/apps/unique_enqueuer.py DATA_DIR DB_URL|- KEY COUNT START_AT

Waits until the wall clock reaches ``START_AT`` (a Unix time, so that several processes
start at once), then enqueues ``COUNT`` jobs of topic ``report`` with unique key ``KEY``
and prints the id each enqueue returned, one per line.
"""

from __future__ import annotations

import sys
import time

from pocketjobs import App
from pocketjobs.plugins import jobs


def main() -> None:
    data_dir, url, key, count, start_at = sys.argv[1:6]
    app = App(data_dir=data_dir, database_url=None if url == "-" else url)
    store = jobs.must_register(app, jobs.Config(auto_start=False, http_enabled=False))
    app.bootstrap()
    try:
        time.sleep(max(0.0, float(start_at) - time.time()))
        for _ in range(int(count)):
            print(store.enqueue("report", {"pid": 1}, unique_key=key).id, flush=True)
    finally:
        app.terminate()


if __name__ == "__main__":
    main()
