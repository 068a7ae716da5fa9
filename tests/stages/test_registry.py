"""The one lazy registry: entry points from other packages join the built-ins; a broken target is an error."""
import importlib.metadata

import pytest
from typer.testing import CliRunner

from pipelines.catalog import PIPELINES, PipelineNotFound, describe_pipelines, resolve
from stages.methods.ensembling.combiners import COMBINERS, make_combiner
from stages.methods.merging import MergeConfigError, get_method, parse_merge_config
from stages.methods.merging.task_arithmetic import TIES
from stages.registry import STAGES, RegistryError, load_target
from tests.toy_stages import Upper


@pytest.fixture
def plugins(monkeypatch):
    """Pretend installed packages declare these entry points: {group: {name: "module:attr"}}."""
    declared: dict[str, dict[str, str]] = {}

    def entry_points(group=None, **_):
        return importlib.metadata.EntryPoints(
            importlib.metadata.EntryPoint(name, value, group) for name, value in declared.get(group, {}).items())

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    return declared


def test_an_entry_point_becomes_a_stage_kind(plugins):
    assert "upper" not in STAGES
    plugins["cascadekit.stages"] = {"upper": "tests.toy_stages:Upper"}
    assert "upper" in STAGES and "asr" in STAGES.names()
    assert STAGES.load("upper") is Upper
    assert STAGES.load_all()["upper"] is Upper


def test_an_entry_point_becomes_a_pipeline(plugins):
    plugins["cascadekit.pipelines"] = {"upper-split": "tests.toy_pipelines:upper_split"}
    assert "upper-split" in PIPELINES.names()
    pipe = resolve("upper-split", {"sleep": "0"})
    assert [type(node.stage).__name__ for node in pipe.nodes.values()] == ["Upper", "Split"]
    assert ("upper-split", "Upper-case, then split into words; optional call counting and a sleep per batch.") \
        in describe_pipelines()


def test_merge_methods_and_combiners_take_entry_points_too(plugins):
    plugins["cascadekit.merge_methods"] = {"my_ties": "stages.methods.merging.task_arithmetic:TIES"}
    plugins["cascadekit.combiners"] = {"mean": "stages.methods.ensembling.combiners:LinearCombiner"}
    assert get_method("my_ties") is TIES
    config = parse_merge_config({"models": [{"model": "a", "parameters": {"weight": 1.0}}],
                                 "merge_method": "my_ties", "base_model": "b"})
    assert config.merge_method == "my_ties"
    assert type(make_combiner("mean")).__name__ == "LinearCombiner"
    assert "mean" in COMBINERS.names()


@pytest.mark.parametrize("target, needle", [
    ("tests.no_such_module:Stage", "cannot import 'tests.no_such_module'"),
    ("tests.toy_stages:Missing", "has no attribute 'Missing'"),
    ("tests.toy_pipelines:upper_split", "not a stage kind"),
    ("no_colon", "not of the form module:attribute"),
])
def test_a_broken_target_is_an_error_that_names_it(plugins, target, needle):
    plugins["cascadekit.stages"] = {"broken": target}
    with pytest.raises(RegistryError, match="stage kind 'broken'") as caught:
        STAGES.load("broken")
    assert needle in str(caught.value)
    with pytest.raises(RegistryError, match="broken"):  # listing everything does not skip it silently
        STAGES.load_all()


def test_broken_plugins_of_the_other_registries_raise_their_own_errors(plugins):
    plugins["cascadekit.pipelines"] = {"gone": "tests.no_such_module:pipe"}
    plugins["cascadekit.merge_methods"] = {"gone": "tests.toy_stages:Upper"}
    with pytest.raises(PipelineNotFound, match="pipeline 'gone'.*cannot import 'tests.no_such_module'"):
        resolve("gone")
    with pytest.raises(MergeConfigError, match="merge method 'gone'.*not a merge method"):
        get_method("gone")


def test_an_entry_point_cannot_replace_a_built_in(plugins):
    plugins["cascadekit.stages"] = {"asr": "tests.toy_stages:Upper"}
    with pytest.raises(RegistryError, match="'asr'.*reuses a built-in name"):
        STAGES.names()
    assert STAGES.load("asr").__name__ == "WhisperASR"  # a built-in never consults the entry points


def test_unknown_names_list_what_is_known(plugins):
    with pytest.raises(RegistryError, match="unknown stage kind 'nope'; known: asr, deliberate"):
        STAGES.load("nope")
    with pytest.raises(ValueError, match="unknown combiner 'geometric'; known: linear, log_linear"):
        make_combiner("geometric")
    with pytest.raises(MergeConfigError, match="merge_method: unknown method 'tiez'.*dare_linear, dare_ties"):
        get_method("tiez")


def test_load_target_follows_dotted_attributes():
    assert load_target("tests.toy_stages:Upper.Config") is Upper.Config


def test_cascade_list_shows_a_plugin_stage_and_refuses_a_broken_one(plugins):
    from flows.cli import app

    plugins["cascadekit.stages"] = {"upper": "tests.toy_stages:Upper"}
    result = CliRunner().invoke(app, ["list"])
    assert result.exit_code == 0, result.output
    assert "upper" in result.output and "tests.toy_stages.Upper" in result.output
    plugins["cascadekit.stages"] = {"upper": "tests.no_such_module:Upper"}
    result = CliRunner().invoke(app, ["list"])
    assert result.exit_code == 2 and "cannot import 'tests.no_such_module'" in result.output
