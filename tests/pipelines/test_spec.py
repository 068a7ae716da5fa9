"""A pipeline's JSON spec (what a job folder stores) rebuilds the same pipeline, edges checked again."""
from __future__ import annotations

import json

import pytest

from pipelines.graph import Metric, Pipeline, WiringError
from tests.toy_stages import Split, Upper


def _fan_out() -> Pipeline:
    pipe = Pipeline("fan", metrics=[Metric("wer", "a", "text", "ref")])
    return pipe.add("a", Upper()).add("b", Split()).add("c", Split()).connect("a", "b").connect("a.text", "c.text")


def test_to_spec_then_from_spec_gives_the_same_pipeline():
    pipe = _fan_out()
    spec = json.loads(json.dumps(pipe.to_spec()))  # through JSON, as workers read it
    again = Pipeline.from_spec(spec)
    assert again.to_spec() == spec
    assert again.describe() == pipe.describe() and again.metrics == pipe.metrics
    assert {n: node.bindings for n, node in again.nodes.items()} == {n: node.bindings for n, node in pipe.nodes.items()}
    assert [type(n.stage) for n in again.nodes.values()] == [Upper, Split, Split]


def test_from_spec_refuses_an_edited_spec_with_a_wrong_edge():
    spec = _fan_out().to_spec()
    spec["nodes"][1]["bindings"] = {"text": ["a", "no_such_field"]}
    with pytest.raises(WiringError, match="no_such_field"):
        Pipeline.from_spec(spec)
