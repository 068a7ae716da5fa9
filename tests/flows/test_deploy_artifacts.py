"""What lands on the Prefect server, read back with the Prefect client (the session's test server):
a `cascade deploy --cron` deployment carries that cron, and a finished job publishes its summary table."""
from __future__ import annotations

import asyncio
import json

from typer.testing import CliRunner

from flows import run
from flows.cli import app
from tests.toy_stages import Split, Upper


def _read(coro_fn):
    from prefect.client.orchestration import get_client

    async def go():
        async with get_client() as client:
            return await coro_fn(client)

    return asyncio.run(go())


def test_cron_deployment_has_that_cron_schedule(tmp_path):
    (tmp_path / "in.txt").write_text("a b\n")
    res = CliRunner().invoke(app, ["deploy", "tests.toy_pipelines:upper_split", "--name", "cron-check",
                                   "--pool", "cron-pool", "--cron", "0 2 * * *", "--inputs", str(tmp_path / "*.txt"),
                                   "--out", str(tmp_path)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "cron '0 2 * * *'" in res.output

    async def deployment(client):
        return [d for d in await client.read_deployments() if d.name == "cron-check"]

    [made] = _read(deployment)
    assert made.work_pool_name == "cron-pool"
    assert [s.schedule.cron for s in made.schedules] == ["0 2 * * *"]
    assert all(s.active for s in made.schedules)


def test_finished_job_publishes_its_summary_as_a_table_artifact(tmp_path):
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    items = [{"id": f"t{i}", "text": f"text number {i}"} for i in range(5)]
    result = run(Upper() >> Split(), items, out=str(tmp_path), job_id="Art_Job", batch_size=2)
    assert result.exit_code == 0

    async def artifacts(client):
        return await client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["cascade-art-job"])))

    found = _read(artifacts)
    assert found and found[-1].type == "table"
    rows = found[-1].data
    rows = json.loads(rows) if isinstance(rows, str) else rows
    want = [{"stage": n, **s} for n, s in result.summary["stages"].items()]
    assert [r["stage"] for r in rows] == ["upper", "split"]
    assert [{k: r[k] for k in ("stage", "ok", "batches")} for r in rows] == \
        [{k: w[k] for k in ("stage", "ok", "batches")} for w in want]
    assert rows[1]["ok"] == 5 and rows[1]["batches"] == 3
    assert "5/5 items ok" in found[-1].description
