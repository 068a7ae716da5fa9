"""The run store's batch cache: fewer parses, same rows, bounded size."""
from __future__ import annotations

from flows import store as store_mod
from flows.store import RunStore, _RecentBatches


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
