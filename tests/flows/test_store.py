"""The run store's batch cache: fewer parses, same rows, bounded size."""
from __future__ import annotations

from flows import store as store_mod
from flows.store import RunStore, _RecentBatches
from stages.payloads import Text


def test_a_batch_written_here_is_read_back_without_parsing(tmp_path, monkeypatch):
    st = RunStore(str(tmp_path))
    rows = [{"id": "a", "output": {"text": "x"}}]
    st.write_batch("asr", "k1", rows)
    assert st.read_jsonl(st.batch_rel("asr", "k1")) == rows  # it is on disk too
    monkeypatch.setattr(RunStore, "read_jsonl", lambda *a: (_ for _ in ()).throw(AssertionError("parsed")))
    assert st.read_batch("asr", "k1") == rows


def test_a_batch_from_another_process_is_parsed_once(tmp_path, monkeypatch):
    monkeypatch.setattr(store_mod, "_recent", _RecentBatches())
    RunStore(str(tmp_path)).write_jsonl("stages/mt/k2.jsonl", [{"id": "b", "error": {"kind": "x"}}])
    calls = []
    real = RunStore.read_jsonl
    monkeypatch.setattr(RunStore, "read_jsonl", lambda self, rel: calls.append(rel) or real(self, rel))
    st = RunStore(str(tmp_path))
    assert st.read_batch("mt", "k2") == st.read_batch("mt", "k2") == [{"id": "b", "error": {"kind": "x"}}]
    assert calls == ["stages/mt/k2.jsonl"]


def test_the_cache_forgets_the_oldest_batches_beyond_its_row_budget():
    cache = _RecentBatches(max_rows=5)
    for i in range(4):
        cache.put(("root", "n", f"k{i}"), [{"id": j} for j in range(2)])
    assert cache.rows <= 5
    assert cache.get(("root", "n", "k0")) is None and cache.get(("root", "n", "k3")) is not None


def test_jsonl_round_trips_what_the_fast_encoder_refuses(tmp_path):
    st = RunStore(str(tmp_path))
    rows = [{"id": "é", "output": {"n": 2**70, "z": [1.5, None]}}, {"id": "b", "output": {"text": "ü"}}]
    st.write_jsonl("a.jsonl", rows)  # 2**70 is beyond orjson: the json fallback writes the file
    assert st.read_jsonl("a.jsonl") == rows
    st.write_jsonl("b.jsonl", rows[1:])
    assert (tmp_path / "b.jsonl").read_text(encoding="utf-8") == '{"id":"b","output":{"text":"ü"}}\n'


def test_jsonl_reads_nan_lines_that_json_wrote(tmp_path):
    (tmp_path / "old.jsonl").write_text('{"id": "a", "output": {"score": NaN}}\n{"id": "b"}\n')
    rows = RunStore(str(tmp_path)).read_jsonl("old.jsonl")
    assert rows[0]["output"]["score"] != rows[0]["output"]["score"] and rows[1] == {"id": "b"}


def test_atomic_writes_leave_no_temporary_files(tmp_path):
    st = RunStore(str(tmp_path))
    for i in range(3):
        st.write_json("deep/er/s.json", {"i": i})
    assert st.read_json("deep/er/s.json") == {"i": 2}
    assert sorted(p.name for p in (tmp_path / "deep" / "er").iterdir()) == ["s.json"]


def test_a_stored_batch_counts_only_when_whole(tmp_path, monkeypatch):
    monkeypatch.setattr(store_mod, "_recent", _RecentBatches())  # read from disk, as a new process would
    st = RunStore(str(tmp_path))
    rows = [{"id": "a", "output": {"text": "x"}}, {"id": "b", "error": {"kind": "k", "message": "m"}}]
    monkeypatch.setattr(store_mod.os, "fsync", lambda fd: (_ for _ in ()).throw(AssertionError("fsync")))
    st.write_batch("mt", "k1", rows)  # batch files skip the fsync: readers check them instead
    monkeypatch.setattr(store_mod, "_recent", _RecentBatches())
    assert st.stored_batch("mt", "k1", ["a", "b"], Text) == rows
    assert st.stored_batch("mt", "k1", ["a", "b", "c"], Text) is None  # not the batch asked for
    assert st.stored_batch("mt", "nope", ["a"], Text) is None
    path = tmp_path / st.batch_rel("mt", "k2")
    for damaged in [b"", b'{"id": "a", "output": {"text": "x"}}\n', b'{"id": "a", "outp']:  # after a power cut
        path.write_bytes(damaged)
        monkeypatch.setattr(store_mod, "_recent", _RecentBatches())
        assert st.stored_batch("mt", "k2", ["a", "b"], Text) is None


def test_forgetting_a_job_drops_only_its_rows():
    cache = _RecentBatches()
    cache.put(("/runs/a", "n", "k1"), [{"id": 1}, {"id": 2}])
    cache.put(("/runs/b", "n", "k1"), [{"id": 3}])
    cache.drop_root("/runs/a")
    assert cache.get(("/runs/a", "n", "k1")) is None and cache.get(("/runs/b", "n", "k1")) == [{"id": 3}]
    assert cache.rows == 1
