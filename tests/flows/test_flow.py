"""Pipelines run through Prefect: same results as direct calls, per-item errors, retries, DAGs."""
from __future__ import annotations

import json
import subprocess

from flows import run
from pipelines import Pipeline
from stages.base import ItemError
from tests.conftest import CASCADE
from tests.toy_stages import Flaky, Split, Upper

TEXTS = [{"id": f"s{i}", "text": f"sentence number {i} here"} for i in range(11)]


def test_flow_equals_direct_stage_calls(tmp_path):
    upper, split = Upper(), Split()
    direct = split.run_batch(upper.run_batch([Upper.Input(text=t["text"]) for t in TEXTS]))
    result = run(upper >> split, TEXTS, out=str(tmp_path), job_id="j", batch_size=4)
    assert result.exit_code == 0
    assert [r["id"] for r in result.outputs] == [t["id"] for t in TEXTS]  # input order kept
    assert [r["split"] for r in result.outputs] == [d.model_dump() for d in direct]
    summary = json.loads((tmp_path / "j" / "summary.json").read_text())
    assert summary["stages"]["split"] == {**summary["stages"]["split"], "ok": 11, "batches": 3}


def test_bad_item_fails_alone_and_the_rest_completes(tmp_path, cli_env):
    items = TEXTS[:5] + [{"id": "poison", "text": "BAD input"}] + TEXTS[5:]
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(i) + "\n" for i in items) + "{not json\n" + '{"id": "nofield"}\n')
    proc = subprocess.run([*CASCADE, "run", "tests.toy_pipelines:upper_split", str(path), "--out",
                           str(tmp_path), "--job-id", "bad", "--batch-size", "4"],
                          capture_output=True, text=True, env=cli_env, timeout=300)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    job = tmp_path / "bad"
    outputs = [json.loads(x) for x in (job / "outputs.jsonl").read_text().splitlines()]
    errors = [json.loads(x) for x in (job / "errors.jsonl").read_text().splitlines()]
    assert [o["id"] for o in outputs] == [t["id"] for t in TEXTS]
    by_id = {e["item_id"]: e for e in errors}
    assert set(by_id) == {"poison", "in:13", "nofield"}
    assert by_id["poison"]["stage"] == "upper" and by_id["poison"]["kind"] == "bad_input"
    assert "not JSON" in by_id["in:13"]["message"]
    assert by_id["nofield"]["kind"] == "invalid_input" and "text" in by_id["nofield"]["message"]
    ItemError.model_validate({k: v for k, v in errors[0].items() if k != "partial"})


def test_batch_exception_is_bisected_to_the_item(tmp_path):
    class Picky(Upper):
        kind = "picky"

        def process(self, batch):
            if any("7" in t.text for t in batch):
                raise ValueError("seven is not allowed")
            return super().process(batch)

    result = run(Pipeline.chain(Picky()), TEXTS, out=str(tmp_path), job_id="p", batch_size=8)
    assert [e["item_id"] for e in result.errors] == ["s7"]
    assert "ValueError: seven is not allowed" in result.errors[0]["message"]
    assert len(result.outputs) == 10 and result.exit_code == 3


def test_transient_failure_is_retried(tmp_path):
    count = tmp_path / "calls.txt"
    pipe = Pipeline.chain(Flaky(count_file=str(count), failures=2, retries=3, retry_delay=0))
    result = run(pipe, TEXTS[:3], out=str(tmp_path), job_id="f", batch_size=10)
    assert result.exit_code == 0
    assert [o["flaky"]["text"] for o in result.outputs] == [t["text"][::-1] for t in TEXTS[:3]]
    assert len(count.read_text().splitlines()) == 3  # two failures, one success


def test_retries_exhausted_reports_the_batch_and_keeps_the_rest(tmp_path):
    count = tmp_path / "calls.txt"
    pipe = Pipeline.chain(Flaky(count_file=str(count), failures=100, retries=1, retry_delay=0))
    result = run(pipe, TEXTS[:3], out=str(tmp_path), job_id="g", batch_size=2)
    assert result.exit_code == 3 and result.outputs == []
    assert {e["kind"] for e in result.errors} == {"batch_failed"}
    assert "flaky call" in result.errors[0]["message"]


def test_fan_out_fan_in_joins_by_item_id(tmp_path):
    from tests.pipelines.test_wiring import WantsWords

    class Echo(WantsWords):
        kind = "echo"

        def process(self, batch):
            return [Upper.Output(text=f"{' '.join(b.words)}|{b.n}") for b in batch]

    pipe = (Pipeline("dag").add("up", Upper()).add("a", Split()).add("b", Split()).add("join", Echo())
            .connect("up", "a").connect("input.text", "b.text").connect("a.words", "join.words")
            .connect("b.n", "join.n"))
    result = run(pipe, TEXTS[:5], out=str(tmp_path), job_id="dag", batch_size=2)
    assert [o["join"]["text"] for o in result.outputs] == [f"{t['text'].upper()}|4" for t in TEXTS[:5]]


def test_fan_out_one_stage_feeds_two_and_both_outputs_equal_direct_calls(tmp_path):
    class Reverse(Upper):
        kind = "reverse"

        def process(self, batch):
            return [Upper.Output(text=t.text[::-1]) for t in batch]

    pipe = (Pipeline("fan").add("up", Upper()).add("split", Split()).add("rev", Reverse())
            .connect("up", "split").connect("up", "rev"))
    assert pipe.validate().sinks() == ["split", "rev"]
    upper = Upper().run_batch([Upper.Input(text=t["text"]) for t in TEXTS[:5]])
    result = run(pipe, TEXTS[:5], out=str(tmp_path), job_id="fan", batch_size=2)
    assert result.exit_code == 0 and [o["id"] for o in result.outputs] == [t["id"] for t in TEXTS[:5]]
    assert [o["split"] for o in result.outputs] == [w.model_dump() for w in Split().run_batch(upper)]
    assert [o["rev"] for o in result.outputs] == [r.model_dump() for r in Reverse().run_batch(upper)]
    assert result.outputs[0]["rev"]["text"] == "EREH 0 REBMUN ECNETNES"  # by hand: upper-cased, then reversed
    assert result.summary["stages"]["up"]["batches"] == 3  # the shared upstream ran once per batch, not per branch


def test_changed_downstream_stage_recomputes_only_itself(tmp_path):
    count = tmp_path / "calls.txt"
    first = Pipeline.chain(Upper(count_file=str(count)), Split(count_file=str(count)))
    run(first, TEXTS, out=str(tmp_path), job_id="r", batch_size=4)
    calls = count.read_text().splitlines()
    assert sum(c.startswith("upper") for c in calls) == 3 and sum(c.startswith("split") for c in calls) == 3
    count.write_text("")
    second = Pipeline.chain(Upper(count_file=str(count)), Split(count_file=str(count), sleep=0.001))
    result = run(second, TEXTS, out=str(tmp_path), job_id="r", batch_size=4)
    calls = count.read_text().splitlines()
    assert sum(c.startswith("upper") for c in calls) == 0 and sum(c.startswith("split") for c in calls) == 3
    assert result.summary["stages"]["upper"]["cached_batches"] == 3


def test_failed_upstream_batch_skips_downstream_without_hanging(tmp_path):
    count = tmp_path / "calls.txt"
    pipe = Pipeline.chain(Flaky(count_file=str(count), failures=100, retries=0), Split())
    result = run(pipe, TEXTS[:4], out=str(tmp_path), job_id="h", batch_size=2)
    assert result.exit_code == 3 and result.outputs == []
    assert {(e["stage"], e["kind"]) for e in result.errors} == {("flaky", "batch_failed")}
    assert result.summary["stages"]["split"]["ok"] == 0


def test_local_threads_are_capped_at_one_per_stage(tmp_path, monkeypatch):
    import threading

    from flows import job_flow
    from flows.engine import run_stage_batch

    threads: dict[str, set] = {}

    def recording(root, node, index, upstream):
        threads.setdefault(node, set()).add(threading.get_ident())
        return run_stage_batch(root, node, index, upstream)

    monkeypatch.setattr(job_flow, "run_stage_batch", recording)
    items = [{"id": f"t{i}", "text": f"text {i}"} for i in range(24)]
    assert run(Pipeline.chain(Upper()), items, out=str(tmp_path), job_id="one", batch_size=2, workers=4).exit_code == 0
    assert len(threads.pop("upper")) == 1  # one stage: one thread, however many workers were asked for
    assert run(Upper(sleep=0.02) >> Split(), items, out=str(tmp_path), job_id="two", batch_size=2,
               workers=4).exit_code == 0
    assert len(threads["upper"] | threads["split"]) == 2  # two stages: two threads, so they overlap


def test_a_finished_job_leaves_nothing_in_memory(tmp_path):
    from flows import job as jobs
    from flows import store as store_mod

    result = run(Upper() >> Split(), TEXTS, out=str(tmp_path), job_id="gone", batch_size=4)
    assert result.exit_code == 0 and len(result.outputs) == len(TEXTS)  # read back from the folder
    assert result.root not in jobs._live
    assert not [k for k in store_mod._recent._data if k[0] == result.root]


def test_objects_older_than_a_job_are_frozen_only_while_it_runs(tmp_path, monkeypatch):
    import gc

    from flows import job_flow
    from flows.engine import run_stage_batch

    seen = []

    def recording(root, node, index, upstream):
        seen.append(gc.get_freeze_count())
        return run_stage_batch(root, node, index, upstream)

    monkeypatch.setattr(job_flow, "run_stage_batch", recording)
    assert gc.get_freeze_count() == 0
    assert run(Upper() >> Split(), TEXTS, out=str(tmp_path), job_id="frozen", batch_size=4).exit_code == 0
    # Objects older than the job (imports, the items) are frozen while it runs: full collections skip them.
    assert seen and min(seen) > 1000
    assert gc.get_freeze_count() == 0  # and back in the collector's care afterwards: nothing leaks
