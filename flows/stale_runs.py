"""Flow runs left "Running" by a process that died (SIGKILL, a lost machine, a failed Ray start).

Nothing on the server notices such a run, so it would stay Running for ever.
When the same job starts again, earlier runs of it that still claim to be
running are marked Crashed, with a message saying why; so is the deployment
run that held them.
"""
from __future__ import annotations

import os

ACTIVE = ("RUNNING", "PENDING", "CANCELLING")


def crash_earlier_runs(flow_run_name: str, keep: set | None = None) -> list[str]:
    """Mark active runs named `flow_run_name` (and their parent runs) Crashed; return their ids.

    Only against a long-lived server (PREFECT_API_URL): the temporary one forgets runs with the job.
    `keep` holds flow-run ids that are alive for sure (the caller's own run and its parents).
    """
    if not os.environ.get("PREFECT_API_URL"):
        return []
    from prefect import get_client
    from prefect.client.schemas.filters import (FlowRunFilter, FlowRunFilterName, FlowRunFilterState,
                                                FlowRunFilterStateType)
    from prefect.client.schemas.objects import StateType
    from prefect.states import Crashed

    keep = {str(k) for k in keep or ()}
    message = (f"marked crashed when job {flow_run_name!r} started again: the process running it had "
               "stopped without reporting an end")
    crashed = []
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            name=FlowRunFilterName(any_=[flow_run_name]),
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType[s] for s in ACTIVE]))))
        for run in runs:
            for run_id in [run.id, *_parents(client, run)]:
                if str(run_id) in keep or str(run_id) in crashed:
                    continue
                client.set_flow_run_state(run_id, Crashed(message=message), force=True)
                crashed.append(str(run_id))
    return crashed


def _parents(client, run) -> list:
    """The flow run that started `run` as a subflow (a deployment's run), when it is still active."""
    if not run.parent_task_run_id:
        return []
    parent = client.read_flow_run(client.read_task_run(run.parent_task_run_id).flow_run_id)
    return [parent.id] if parent.state and parent.state.type.name in ACTIVE else []


def live_run_ids() -> set[str]:
    """This process's current flow run and the runs above it: never crash those."""
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    return {str(ctx.flow_run.id)} if ctx and ctx.flow_run else set()
