"""Result flows and training runs behind docs/RESULTS.md, run as `python -m experiments.NAME`.

An entry point: cascadekit's Prefect and thread defaults apply before any experiment imports prefect or torch.
"""
from flows import settings

settings.apply()
