"""Every bound the jobs plugin enforces, each defined once.

The store validates against these; the config, the HTTP API, its OpenAPI document and the
docs refer to them instead of repeating the numbers.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Final

__all__ = [
    "MAX_DELAY",
    "MAX_ERROR_LENGTH",
    "MAX_JSON_DEPTH",
    "MAX_LIST_LIMIT",
    "MAX_OFFSET",
    "MAX_PRIORITY",
    "MAX_QUEUE_LENGTH",
    "MAX_RETRIES_LIMIT",
    "MAX_RETRY_WAIT",
    "MAX_TIMEOUT",
    "MAX_TOPIC_LENGTH",
    "MAX_UNIQUE_KEY_LENGTH",
    "MIN_TIMEOUT",
]

#: The longest topic name, in characters.
MAX_TOPIC_LENGTH: Final = 255
#: The longest queue name, in characters (letters, digits and ``_ - .``).
MAX_QUEUE_LENGTH: Final = 64
#: The lowest priority (0 is the highest, and the default).
MAX_PRIORITY: Final = 9
#: The longest unique key, in characters.
MAX_UNIQUE_KEY_LENGTH: Final = 255
#: The most retries a job may have.
MAX_RETRIES_LIMIT: Final = 1000
#: The longest ``delay`` accepted: a hundred years.
MAX_DELAY: Final = timedelta(days=36_525)
#: The deepest nesting of arrays and objects a payload may have.
MAX_JSON_DEPTH: Final = 512
#: The largest page of a job list (a larger ``limit`` is capped to it over HTTP).
MAX_LIST_LIMIT: Final = 500
#: The largest ``offset`` of a job list.
MAX_OFFSET: Final = 1_000_000_000
#: The longest ``last_error`` kept (characters; the middle of a longer one is cut).
MAX_ERROR_LENGTH: Final = 16_384
#: The longest wait before a retry, whatever the backoff function says.
MAX_RETRY_WAIT: Final = timedelta(days=365)
#: The longest timeout of an attempt.
MAX_TIMEOUT: Final = timedelta(days=7)
#: The shortest timeout of an attempt (timeouts are kept in whole milliseconds).
MIN_TIMEOUT: Final = timedelta(milliseconds=1)
