"""Pipelines: type-checked wiring of stages, and the ready-made cascades."""
from pipelines.graph import INPUT, Metric, Pipeline, WiringError
from pipelines.registry import PipelineNotFound, resolve

__all__ = ["INPUT", "Metric", "Pipeline", "PipelineNotFound", "WiringError", "resolve"]
