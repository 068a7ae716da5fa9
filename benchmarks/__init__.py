"""Speed benchmarks, run as `python -m benchmarks.NAME`.

An entry point: cascadekit's Prefect and thread defaults apply before any benchmark imports prefect or torch.
"""
from flows import settings

settings.apply()
