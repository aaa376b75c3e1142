"""Benchmarks of pocketjobs against peer job queues (pgqueuer, procrastinate, huey).

Run ``python -m bench`` from the repository root with the project's virtualenv; see
``bench/README.md``. Not shipped in the package.
"""
