"""Typed merge errors: every message names the model, tensor or config field at fault."""
from __future__ import annotations


class MergeError(Exception):
    """Base class of every error raised by stages.methods.merging."""


class MergeConfigError(MergeError, ValueError):
    """The merge configuration is invalid (raised before any tensor is read)."""


class MergeInputError(MergeError, ValueError):
    """An input model cannot be merged: missing/mismatched/non-finite tensor, unreadable file."""
