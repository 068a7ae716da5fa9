"""Prefect settings cascadekit wants before `prefect` is imported anywhere.

Only defaults: anything the user exported wins.
"""
from __future__ import annotations

import logging
import os

DEFAULTS = {
    # No network here and no wish to phone home anywhere.
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    # Our own store persists results; Prefect's pickled results would double the I/O.
    "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "false",
    # The console belongs to our progress bar and summary; Prefect logs still reach the server/UI.
    "PREFECT_LOGGING_LEVEL": "WARNING",
    "PREFECT_SERVER_LOGGING_LEVEL": "ERROR",
    "PREFECT_UI_ENABLED": "false",
}


def apply_defaults() -> None:
    for key, value in DEFAULTS.items():
        os.environ.setdefault(key, value)
    if not os.environ.get("PREFECT_API_URL"):
        # The temporary server's shutdown cancels its tasks and logs the
        # CancelledError tracebacks at ERROR; they carry no information.
        for name in ("uvicorn.error", "prefect.server", "prefect._internal.concurrency",
                     "prefect.server.services", "prefect.events.clients"):
            logging.getLogger(name).addFilter(_drop_cancelled)


def _drop_cancelled(record: logging.LogRecord) -> bool:
    exc = record.exc_info[1] if record.exc_info else None
    text = record.getMessage()
    return not (type(exc).__name__ == "CancelledError" or "CancelledError" in text)


apply_defaults()
