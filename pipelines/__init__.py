"""Pipelines: type-checked wiring of stages, and the ready-made cascades."""
from pipelines.graph import INPUT, Metric, Pipeline, WiringError
from pipelines.catalog import PIPELINES, PipelineNotFound, resolve

__all__ = ["INPUT", "Metric", "PIPELINES", "Pipeline", "PipelineNotFound", "WiringError", "resolve"]
