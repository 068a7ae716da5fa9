import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
from flows import settings  # noqa: E402

settings.apply()  # cascadekit's Prefect and thread defaults, before any test imports prefect or torch


@pytest.fixture(scope="session", autouse=True)
def prefect_server():
    """One temporary Prefect server for the whole session; subprocesses reuse it via PREFECT_API_URL."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        os.environ["PREFECT_API_URL"] = PREFECT_API_URL.value()
        yield PREFECT_API_URL.value()
        os.environ.pop("PREFECT_API_URL", None)


@pytest.fixture
def cli_env():
    """Environment for `cascade` subprocesses: repo importable, the session's Prefect server."""
    env = dict(os.environ)
    # No empty entry: Python reads one as the current folder, ahead of site-packages.
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(ROOT), env.get("PYTHONPATH", "")] if p)
    return env


CASCADE = [str(Path(sys.executable).with_name("cascade"))]  # the installed entry point


@pytest.fixture(scope="session")
def tiny_whisper(tmp_path_factory):
    from stages.testing.tiny_checkpoints import make_whisper

    return make_whisper(tmp_path_factory.mktemp("whisper") / "tiny.pt")


@pytest.fixture(scope="session")
def tiny_marian(tmp_path_factory):
    from stages.testing.tiny_checkpoints import save_marian

    return save_marian(tmp_path_factory.mktemp("marian"))


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory):
    from stages.testing.tiny_checkpoints import save_gpt2

    return save_gpt2(tmp_path_factory.mktemp("gpt2"))


@pytest.fixture(scope="session")
def audio_dir(tmp_path_factory):
    """Clips of synthetic 'speech' (tone sweeps + noise) in many formats and shapes."""
    from tests.audio_samples import make_clips

    return make_clips(tmp_path_factory.mktemp("audio"))
