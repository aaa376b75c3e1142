"""Worker-process entry: ``python -m bench.worker ADAPTER_KEY SPEC_JSON``.

Started by :class:`bench.common.WorkerProcess`; runs the adapter's ``worker_main``.
"""

from __future__ import annotations

import json
import sys

from bench.adapters import get_adapter
from bench.common import set_record_path


def main() -> None:
    key, spec_text = sys.argv[1], sys.argv[2]
    spec = json.loads(spec_text)
    set_record_path(spec["records"])
    get_adapter(key).worker_main(spec)


if __name__ == "__main__":
    main()
