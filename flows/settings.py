"""cascadekit's process settings: Prefect and thread defaults, applied by the entry points.

Nothing happens on import. `apply()` runs first thing in the `cascade` command, in
`flows.run_job.run`, in the tests' conftest and in the benchmarks; call it yourself
before importing prefect or torch when you drive stages from your own code. It only
sets defaults: anything the user exported wins. Calling it again does nothing.
"""
from __future__ import annotations

import contextlib
import logging
import os

# torch's OpenMP threads spin while they wait, by default: they keep both cores busy and take them from
# the Prefect threads and server that run beside the stages. Waiting threads that sleep cost the stages
# nothing measurable here and leave the gaps to the orchestration (benchmarks/bench_overhead.py, batches
# of 64: flow/loop 1.11-1.15 with libgomp's default spinning, 0.99-1.06 sleeping). libgomp reads it when
# torch loads, so it must be set before torch is imported.
THREAD_ENV_DEFAULTS = {"OMP_WAIT_POLICY": "PASSIVE"}

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
_applied = False


def apply() -> None:
    """Set cascadekit's defaults in os.environ and quiet the temporary server's shutdown noise."""
    global _applied
    if _applied:
        return
    _applied = True
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


_quiet_settings: dict[int, tuple] = {}  # id(settings) -> (settings, the same without heartbeats)


def no_heartbeats_without_a_server():
    """A context with Prefect's flow heartbeats off when there is no real server.

    Heartbeats let a long-lived server spot crashed runs; the temporary one dies with us.
    Prefect's heartbeat thread sleeps in 1 s steps, so joining it costs up to a
    second at the end of every job. Building the changed settings costs ~0.1 s,
    so it is done once per settings object.
    """
    from prefect.context import SettingsContext, get_settings_context
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY

    if os.environ.get("PREFECT_API_URL"):
        return contextlib.nullcontext()
    ctx = get_settings_context()
    base, quiet = _quiet_settings.get(id(ctx.settings), (None, None))
    if base is not ctx.settings:
        quiet = ctx.settings.copy_with_update(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None})
        _quiet_settings[id(ctx.settings)] = (ctx.settings, quiet)
    return SettingsContext(profile=ctx.profile, settings=quiet)
