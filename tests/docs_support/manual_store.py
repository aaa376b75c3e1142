"""docs-test setup ``manual_store``: the context the plugin manual's fragments assume.

Defines, for real (nothing is stubbed):

- ``app``: an :class:`~pocketjobs.App` on SQLite in ``./pb_data``, bootstrapped, terminated
  at exit; ``jobs``: the plugin module;
- ``store``: its :class:`JobStore` (``auto_start=False``: the fragment decides whether to
  run the dispatcher);
- ``payload``: an e-mail payload;
- ``order_id``, ``total``: an order to insert into the ``orders`` table, which exists;
- ``job_id``: the id of a job that really failed (its handler raised, no retries left).
"""

import atexit
import time

from pocketjobs import App
from pocketjobs.plugins import jobs

app = App()
store = jobs.must_register(app, jobs.Config(auto_start=False))
app.bootstrap()
atexit.register(app.terminate)

payload = {"to": "a@example.com", "subject": "Hello"}

app.db.execute("CREATE TABLE orders (id TEXT PRIMARY KEY, total INTEGER NOT NULL)")
order_id = "order-1"
total = 4200


@store.handler("docs_test_always_fails")
def _always_fails(job: jobs.Job) -> None:
    raise RuntimeError("this job fails on purpose")


job_id = store.enqueue("docs_test_always_fails", {"n": 1}, max_retries=0).id
store.start()
_deadline = time.monotonic() + 60
while store.get(job_id).status != "failed":
    if time.monotonic() > _deadline:
        raise RuntimeError(f"job {job_id} did not fail within 60 s: {store.get(job_id)}")
    time.sleep(0.02)
store.stop()
