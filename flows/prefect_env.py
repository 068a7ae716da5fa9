"""Prefect settings cascadekit wants before `prefect` is imported anywhere.

Only defaults: anything the user exported wins.
"""
from __future__ import annotations

import logging
import os

from stages import THREAD_ENV_DEFAULTS

DEFAULTS = {
    **THREAD_ENV_DEFAULTS,  # also for Ray workers, which get DEFAULTS as their environment
    # No network here and no wish to phone home anywhere.
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    # Our own store persists results; Prefect's pickled results would double the I/O.
    "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "false",
    # The console belongs to our progress bar and summary: its handler shows WARNING and up. Prefect's
    # loggers stay at INFO, so run and task logs (batch done, reused, failed) still reach the server/UI.
    "PREFECT_LOGGING_LEVEL": "INFO",
    "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "WARNING",
    "PREFECT_SERVER_LOGGING_LEVEL": "ERROR",
    "PREFECT_UI_ENABLED": "false",
    # Every stage × batch task emits three state events. One database transaction per event cost
    # the server ~30 ms of CPU per task run on 2 cores, taken from the stages; batches of events
    # cost a tenth of that. Applies to the temporary server and to `cascade server`.
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE": "200",
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_READ_BATCH_SIZE": "50",
    "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_BATCH_SIZE": "200",
    "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_READ_BATCH_SIZE": "50",
}

# Only for the temporary server that lives and dies with one job: nobody can have defined
# automations on it or be streaming its events, so those services would only burn CPU.
EMBEDDED_SERVER = {
    "PREFECT_SERVER_SERVICES_TRIGGERS_ENABLED": "false",
    "PREFECT_SERVER_EVENTS_STREAM_OUT_ENABLED": "false",
    # Storing every event (three per task run) was half the server's CPU, and only automations and
    # the event feed read them. Task runs, their states, logs and artifacts are still recorded.
    "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_ENABLED": "false",
    # Its uvicorn reads UVICORN_* options: events cross loopback, so compressing them (per-message
    # deflate, on for websockets by default) only costs CPU on both ends.
    "UVICORN_WS_PER_MESSAGE_DEFLATE": "false",
    # The server runs in a subprocess our log filters cannot reach. Stopping it while its task-run
    # recorder writes a batch logs that cancelled write at ERROR with a traceback (seen after
    # `make demo`); an API failure that matters reaches the client as an error response anyway.
    "PREFECT_SERVER_LOGGING_LEVEL": "CRITICAL",
    # Its own database file: one-off runs never land among a long-lived `cascade server`'s runs,
    # which keeps Prefect's default prefect.db in the same PREFECT_HOME.
    "PREFECT_SERVER_DATABASE_CONNECTION_URL": "sqlite+aiosqlite:///" + os.path.join(
        os.path.expanduser(os.environ.get("PREFECT_HOME") or "~/.prefect"), "cascade-embedded.db"),
}


embedded_only: list[str] = []  # EMBEDDED_SERVER keys set by us (not the user): `cascade server` drops them


def apply_defaults() -> None:
    exported = set(os.environ)  # the user's choices, which always win
    for key, value in DEFAULTS.items():
        os.environ.setdefault(key, value)
    if not os.environ.get("PREFECT_API_URL"):
        for key, value in EMBEDDED_SERVER.items():
            if key not in exported:
                os.environ[key] = value
                embedded_only.append(key)
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
