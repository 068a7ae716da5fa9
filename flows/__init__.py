"""Prefect side of cascadekit: compile pipelines into flows, run, resume, deploy.

Importing it changes nothing: entry points call `flows.settings.apply()` (and `run` does).
"""

__all__ = ["run", "JobResult"]


def __getattr__(name):  # lazy: `cascade --help` and usage errors should not pay for importing Prefect
    if name in __all__:
        from flows import run_job

        return getattr(run_job, name)
    raise AttributeError(name)
