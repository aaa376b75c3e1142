"""The example app: ``python examples/base/main.py serve`` serves http://127.0.0.1:8090.

Data lives next to this file in ``pb_data/`` (SQLite) unless ``--dir`` or ``--db`` /
``PB_DATABASE_URL`` says otherwise.
"""

from pathlib import Path

from pocketjobs import App

app = App(data_dir=Path(__file__).resolve().parent / "pb_data")

if __name__ == "__main__":
    app.start()
