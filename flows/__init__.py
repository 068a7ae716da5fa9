"""Prefect side of cascadekit: compile pipelines into flows, run, resume, deploy."""
from flows import prefect_env as _prefect_env  # noqa: F401  (must precede any prefect import)

__all__ = ["run", "JobResult"]


def __getattr__(name):  # lazy: `cascade --help` and usage errors should not pay for importing Prefect
    if name in __all__:
        from flows import compile as _compile

        return getattr(_compile, name)
    raise AttributeError(name)
