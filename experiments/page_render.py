"""Render one docs/RESULTS.md section from the record its command wrote.

Every figure and every conclusion on the page comes from the record: the
section's `how` text is a template over the record's figures and setup (its
inputs), derived values are computed from them, goals are checked against
them to give the verdict, and findings pick their wording by comparing
figures. A value the record lacks (an older run) renders as "n/a" with the
command that would fill it, never as a remembered number.
"""
from __future__ import annotations

import operator
import string
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

Values = Mapping[str, Any]

_OPS = {"<=": (operator.le, "≤"), ">=": (operator.ge, "≥"), "<": (operator.lt, "<"), ">": (operator.gt, ">"),
        "==": (operator.eq, "=")}


@dataclass(frozen=True)
class Goal:
    """`figure OP target`; target is a number or the name of another figure (e.g. all items ok = items)."""

    op: str
    target: float | str
    unit: str = ""

    def text(self) -> str:
        return f"{_OPS[self.op][1]} {self.target}{' ' + self.unit if self.unit else ''}"

    def met(self, value: Any, values: Values) -> bool | None:
        target = values.get(self.target) if isinstance(self.target, str) else self.target
        if not isinstance(value, (int, float)) or not isinstance(target, (int, float)):
            return None  # not measured (or not a number): no verdict
        return bool(_OPS[self.op][0](value, target))


@dataclass(frozen=True)
class Finding:
    """A sentence whose wording depends on the figures: `then` when `when(values)` holds, else `otherwise`."""

    then: str
    when: Callable[[Values], bool] | None = None
    otherwise: str = ""


@dataclass
class Section:
    name: str
    title: str
    command: list[str]
    how: str  # the method, as a template over the record's setup and figures
    goals: dict[str, Goal] = field(default_factory=dict)
    derived: dict[str, Callable[[Values], Any]] = field(default_factory=dict)  # values computed from figures
    findings: list[Finding] = field(default_factory=list)

    @property
    def command_text(self) -> str:
        return "python -m " + " ".join(self.command[2:])


MISSING = object()


class _Template(string.Formatter):
    """str.format over the record's values: absent keys render "n/a" (and are remembered), `!l` joins a list."""

    def __init__(self, values: Values):
        self.values, self.missing = values, []

    def get_value(self, key, args, kwargs):
        if key not in self.values:
            self.missing.append(key)
            return MISSING
        return self.values[key]

    def convert_field(self, value, conversion):
        if conversion != "l":
            return super().convert_field(value, conversion)
        if not isinstance(value, (list, tuple)):
            return value  # n/a, or a single value
        items = [f"{v:g}" if isinstance(v, float) else str(v) for v in value]
        return ", ".join(items[:-1]) + " and " + items[-1] if len(items) > 1 else "".join(items)

    def format_field(self, value, spec):
        if value is MISSING:
            return "n/a"
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return str(value)  # a spec meant for a number is ignored on text
        return format(value, spec) if spec else f"{value:g}"


def section_values(section: Section, record: Mapping) -> dict:
    """setup + figures + goal texts and checks + derived values (one whose inputs are absent is left out)."""
    values = {**record.get("setup", {}), **record["figures"]}
    for key, goal in section.goals.items():  # findings may word themselves by a goal: "{goal_X}", met_X
        values[f"goal_{key}"] = goal.text()
        values[f"met_{key}"] = goal.met(values.get(key), values)
    for key, fn in section.derived.items():
        try:
            values[key] = fn(values)
        except (KeyError, TypeError, ValueError, ZeroDivisionError):
            pass
    return values


def _checks(section: Section, values: Values) -> dict[str, bool | None]:
    return {k: g.met(values.get(k), values) for k, g in section.goals.items()}


def verdict(section: Section, values: Values) -> str | None:
    """One line: does the section's claim hold, judged from the figures against the goals?"""
    if not section.goals:
        return None
    checks = _checks(section, values)
    missed = [k for k, ok in checks.items() if ok is False]
    unmeasured = [k for k, ok in checks.items() if ok is None]
    if unmeasured:
        return f"**Verdict: not judged** — no figure for {', '.join(unmeasured)} in this run."
    if missed:
        why = "; ".join(f"{k} = {_show(values[k])}, goal {section.goals[k].text()}" for k in missed)
        return f"**Verdict: the claim does not hold here** (missed: {why})."
    return f"**Verdict: the claim holds** ({'its goal is' if len(checks) == 1 else 'every goal is'} met)."


def summary_row(section: Section, record: Mapping | None) -> str:
    """| section | goal figures | verdict | for the table at the top of the page."""
    if record is None:
        return f"| {section.title} | | not measured yet |"
    values = section_values(section, record)
    figures = "; ".join(f"{k} {_show(values[k])} ({g.text()})" for k, g in section.goals.items() if k in values)
    checks = _checks(section, values)
    word = ("no goal (findings only)" if not checks else "not judged" if None in checks.values()
            else "holds" if all(checks.values()) else "does not hold")
    return f"| [{section.title}](#{_anchor(section.title)}) | {figures} | {word} |"


def _anchor(title: str) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped, spaces to hyphens."""
    kept = "".join(c for c in title.lower() if c.isalnum() or c in " -_")
    return kept.replace(" ", "-")


def render_section(section: Section, record: Mapping | None) -> list[str]:
    out = [f"## {section.title}", ""]
    if record is None:
        return out + [f"_Not measured yet: run `{section.command_text}`._", ""]
    values = section_values(section, record)
    template = _Template(values)
    prose = [template.format(section.how)]
    for f in section.findings:
        try:
            text = f.then if f.when is None or f.when(values) else f.otherwise
        except (KeyError, TypeError):
            text = f.then if f.when is None else ""  # its inputs are absent: state nothing
        if text:
            prose.append(template.format(text))
    out += [_provenance(section, record), "", " ".join(prose), ""]
    if template.missing:
        out += [f"n/a: {', '.join(sorted(set(template.missing)))} not recorded by this run; rerun "
                f"`{section.command_text}` to fill {'them' if len(set(template.missing)) > 1 else 'it'}.", ""]
    line = verdict(section, values)
    if line:
        out += [line, ""]
    out += ["| figure | value | goal | met |", "|---|---|---|---|"]
    for k, v in record["figures"].items():
        goal = section.goals.get(k)
        met = goal.met(v, values) if goal else None
        out.append(f"| {k} | {_show(v)} | {goal.text() if goal else ''} | "
                   f"{'' if met is None else 'yes' if met else 'no'} |")
    out += _history(record)
    if record.get("table"):
        out += ["", "```", *record["table"], "```"]
    out.append("")
    return out


def _provenance(section: Section, record: Mapping) -> str:
    machine = record.get("machine")
    where = (f"{machine['cpus']} CPU cores, {machine['gpus'] or 'no'} GPU{'s' if machine['gpus'] != 1 else ''}"
             if machine else "machine not recorded")
    commit = f" · commit {record['commit']}" if record.get("commit") else ""
    return f"Command: `{record['command']}` · run {record['date']}{commit} · {record['seconds']} s · {where}"


def _history(record: Mapping) -> list[str]:
    """Earlier runs of the same command, as make_results stored them (goal figures only)."""
    rows = record.get("history") or []
    if not rows:
        return []
    out = ["", "Earlier runs of this command (stored by make_results when it replaced them):", ""]
    for h in rows:
        figs = ", ".join(f"{k} {_show(v)}" for k, v in h["figures"].items())
        commit = f" (commit {h['commit']})" if h.get("commit") else ""
        out.append(f"- {h['date']}{commit}: {figs}")
    return out


def _show(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)
