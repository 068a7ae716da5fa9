"""Pipelines: stages wired into a DAG whose every edge is type-checked when made.

    pipe = WhisperASR(model="tiny") >> Translate(model="...")        # a chain
    pipe = Pipeline("st").add("asr", asr).add("mt", mt).connect("asr.text", "mt.text")

Edges bind a field of one node's Output (or of the job's input items,
`input.FIELD`) to a field of another node's Input. Nodes without incoming
edges read their Input straight from the input items. A wrong connection
raises `WiringError` naming both ends and both types, before any model loads.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from stages.base import Stage, stage_from_spec
from pipelines.typecheck import assignable, type_name

INPUT = "input"


class WiringError(TypeError):
    """The pipeline's wiring is wrong. Raised while building, never while running."""


@dataclass(frozen=True)
class Metric:
    """Score a node's output field against a reference field of the input items."""

    name: str  # a name from flows.metrics (wer, cer, bleu, chrf)
    node: str
    field: str
    reference: str


@dataclass
class Node:
    name: str
    stage: Stage
    # input field -> (source node or INPUT, source field)
    bindings: dict[str, tuple[str, str]] = field(default_factory=dict)

    @property
    def upstream(self) -> list[str]:
        return sorted({src for src, _ in self.bindings.values() if src != INPUT})


class Pipeline:
    def __init__(self, name: str = "pipeline", metrics: list[Metric] | None = None):
        self.name = name
        self.nodes: dict[str, Node] = {}
        self.metrics: list[Metric] = list(metrics or [])

    # -- building -------------------------------------------------------
    def add(self, name: str, stage: Stage) -> "Pipeline":
        if not isinstance(stage, Stage):
            raise WiringError(f"node {name!r}: {stage!r} is not a Stage")
        if name in self.nodes or name == INPUT or not name.isidentifier():
            raise WiringError(f"node name {name!r} is taken, reserved or not an identifier")
        self.nodes[name] = Node(name, stage)
        return self

    def connect(self, source: str, target: str) -> "Pipeline":
        """`a -> b` binds every same-named field; `a.x -> b.y` binds one field."""
        src_node, _, src_field = source.partition(".")
        dst_node, _, dst_field = target.partition(".")
        if dst_node not in self.nodes:
            raise WiringError(f"connect {source} -> {target}: no node {dst_node!r} (have {list(self.nodes)})")
        if src_node != INPUT and src_node not in self.nodes:
            raise WiringError(f"connect {source} -> {target}: no node {src_node!r} (have {list(self.nodes)})")
        if src_node == dst_node:
            raise WiringError(f"connect {source} -> {target}: a node cannot feed itself")
        dst_fields = self.nodes[dst_node].stage.Input.model_fields
        if src_node == INPUT:
            if not src_field:
                raise WiringError("connect from 'input' needs a field: input.FIELD")
            pairs = [(src_field, dst_field or src_field)]
        elif src_field or dst_field:
            pairs = [(src_field or dst_field, dst_field or src_field)]
        else:
            src_fields = self._output_fields(src_node)
            pairs = [(f, f) for f in dst_fields if f in src_fields]
            if not pairs:
                raise WiringError(
                    f"connect {src_node} -> {dst_node}: {self._out_name(src_node)} and "
                    f"{self._in_name(dst_node)} have no field in common "
                    f"(outputs {sorted(src_fields)}, inputs {sorted(dst_fields)}); connect fields explicitly")
        for s, d in pairs:
            self._bind(src_node, s, dst_node, d)
        self._check_acyclic()
        return self

    def _bind(self, src_node: str, src_field: str, dst_node: str, dst_field: str) -> None:
        dst_fields = self.nodes[dst_node].stage.Input.model_fields
        if dst_field not in dst_fields:
            raise WiringError(f"{dst_node}.{dst_field}: {self._in_name(dst_node)} has no field "
                              f"{dst_field!r} (fields: {sorted(dst_fields)})")
        want = dst_fields[dst_field].annotation
        if src_node != INPUT:
            src_fields = self._output_fields(src_node)
            if src_field not in src_fields:
                raise WiringError(f"{src_node}.{src_field}: {self._out_name(src_node)} has no field "
                                  f"{src_field!r} (fields: {sorted(src_fields)})")
            have = src_fields[src_field].annotation
            if not assignable(have, want):
                raise WiringError(
                    f"cannot connect {src_node}.{src_field} ({self._out_name(src_node)}.{src_field}: "
                    f"{type_name(have)}) -> {dst_node}.{dst_field} ({self._in_name(dst_node)}.{dst_field}: "
                    f"{type_name(want)}): {type_name(have)} is not assignable to {type_name(want)}")
        bound = self.nodes[dst_node].bindings.get(dst_field)
        if bound and bound != (src_node, src_field):
            raise WiringError(f"{dst_node}.{dst_field} is already fed by {'.'.join(bound)}")
        self.nodes[dst_node].bindings[dst_field] = (src_node, src_field)

    def _output_fields(self, node: str) -> dict:
        return self.nodes[node].stage.Output.model_fields

    def _out_name(self, node: str) -> str:
        return f"{type(self.nodes[node].stage).__name__}.Output"

    def _in_name(self, node: str) -> str:
        return f"{type(self.nodes[node].stage).__name__}.Input"

    def _check_acyclic(self) -> None:
        self.order()

    # -- chaining sugar -------------------------------------------------
    @classmethod
    def chain(cls, *parts: "Stage | Pipeline", name: str | None = None) -> "Pipeline":
        pipe = cls(name or "pipeline")
        for part in parts:
            pipe = pipe >> part
        return pipe

    def __rshift__(self, other: "Stage | Pipeline") -> "Pipeline":
        if isinstance(other, Stage):
            other = Pipeline().add(self._free_name(other.kind), other)
        if not isinstance(other, Pipeline):
            return NotImplemented
        tails = self.sinks()
        heads = other.roots()
        if len(tails) > 1 or len(heads) > 1:
            raise WiringError(f"`>>` needs one sink on the left ({tails}) and one root on the right "
                              f"({heads}); use connect()")
        renames = {}
        for node in other.nodes.values():
            new = node.name if node.name not in self.nodes else self._free_name(node.name)
            renames[node.name] = new
            self.add(new, node.stage)
        for node in other.nodes.values():
            for dst_field, (src, src_field) in node.bindings.items():
                src = src if src == INPUT else renames[src]
                self._bind(src, src_field, renames[node.name], dst_field)
        if tails and heads:
            self.connect(tails[0], renames[heads[0]])
        self.metrics += other.metrics
        return self

    def _free_name(self, base: str) -> str:
        name, i = base, 2
        while name in self.nodes:
            name, i = f"{base}{i}", i + 1
        return name

    # -- as JSON (what a job folder stores and every worker rebuilds) ---------
    def to_spec(self) -> dict:
        return {
            "name": self.name,
            "nodes": [{"name": n, "stage": self.nodes[n].stage.spec(),
                       "bindings": {k: list(v) for k, v in self.nodes[n].bindings.items()}} for n in self.order()],
            "metrics": [m.__dict__ for m in self.metrics],
        }

    @classmethod
    def from_spec(cls, spec: dict) -> "Pipeline":
        """The pipeline `to_spec` described, every edge type-checked again."""
        pipe = cls(spec["name"], metrics=[Metric(**m) for m in spec.get("metrics", [])])
        for node in spec["nodes"]:
            pipe.add(node["name"], stage_from_spec(node["stage"]))
        for node in spec["nodes"]:
            for dst_field, (src, src_field) in node["bindings"].items():
                pipe._bind(src, src_field, node["name"], dst_field)
        return pipe.validate()

    # -- reading --------------------------------------------------------
    def order(self) -> list[str]:
        """Topological order (stable: insertion order among ready nodes)."""
        done: list[str] = []
        pending = dict(self.nodes)
        while pending:
            ready = [n for n, node in pending.items() if all(u in done for u in node.upstream)]
            if not ready:
                raise WiringError(f"the pipeline has a cycle among {sorted(pending)}")
            for n in ready:
                done.append(n)
                del pending[n]
        return done

    def roots(self) -> list[str]:
        return [n for n in self.order() if not self.nodes[n].upstream]

    def sinks(self) -> list[str]:
        fed = {u for node in self.nodes.values() for u in node.upstream}
        return [n for n in self.order() if n not in fed]

    def input_fields(self) -> dict[str, Any]:
        """Fields the input items must (or may) carry: root inputs and explicit `input.X` bindings."""
        fields: dict[str, Any] = {}
        for name in self.order():
            node = self.nodes[name]
            for f, info in node.stage.Input.model_fields.items():
                src = node.bindings.get(f)
                if (src is None and not node.upstream) or (src and src[0] == INPUT):
                    key = src[1] if src else f
                    fields.setdefault(key, info)
        return fields

    def validate(self) -> "Pipeline":
        """Every required input of a non-root node must be fed. Raises WiringError."""
        if not self.nodes:
            raise WiringError(f"pipeline {self.name!r} has no stages")
        for name in self.order():
            node = self.nodes[name]
            if not node.upstream:
                continue
            for f, info in node.stage.Input.model_fields.items():
                if f not in node.bindings and info.is_required():
                    raise WiringError(f"{name}.{f} ({self._in_name(name)}.{f}: {type_name(info.annotation)}) "
                                      f"is required but nothing feeds it; connect a field or input.{f}")
        for m in self.metrics:
            if m.node not in self.nodes or m.field not in self._output_fields(m.node):
                raise WiringError(f"metric {m.name}: {m.node}.{m.field} is not an output of this pipeline")
        return self

    def input_assembler(self, name: str):
        """A function (item, upstream outputs) -> one node's input record, with the wiring looked up once."""
        node = self.nodes[name]
        own = list(node.stage.Input.model_fields) if not node.upstream else []  # a root reads the item
        bindings = list(node.bindings.items())

        def assemble(item: dict, outputs: dict[str, dict]) -> dict:
            record = {f: item[f] for f in own if f in item}
            for dst_field, (src, src_field) in bindings:
                source = item if src == INPUT else outputs[src]
                if src_field in source:
                    record[dst_field] = source[src_field]
            return record

        return assemble

    def describe(self) -> str:
        lines = [f"pipeline {self.name}"]
        for name in self.order():
            node = self.nodes[name]
            feeds = ", ".join(f"{f}<-{s}.{sf}" for f, (s, sf) in node.bindings.items()) or "input items"
            lines.append(f"  {name}: {type(node.stage).__name__} "
                         f"({node.stage.Input.__name__} -> {node.stage.Output.__name__}) [{feeds}]")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"Pipeline({self.name!r}, nodes={list(self.nodes)})"


def input_model_of(pipe: Pipeline) -> type[BaseModel]:
    """A pydantic model of what one input item must look like (for boundary validation)."""
    from pydantic import create_model

    fields = {k: (info.annotation, info) for k, info in pipe.input_fields().items()}
    return create_model(f"{pipe.name.title().replace('-', '')}Item", **fields)
