"""One lazy registry for everything looked up by name: stage kinds, pipelines, merge methods, combiners.

A registry maps a name to a "module:attribute" target: the built-in table written here or beside
the thing it names, plus the Python entry points of one group, so another installed package can add
a name without touching cascadekit:

    [project.entry-points."cascadekit.stages"]
    my_stage = "my_package.stage:MyStage"

Targets are imported on first use (torch and whisper are slow to import) and then kept. A target
that cannot be imported, or is not the kind of thing the registry holds, is an error that names it.
An entry point cannot replace a built-in name.
"""
from __future__ import annotations

import importlib
import importlib.metadata
from typing import Any, Callable, Generic, Optional, TypeVar

T = TypeVar("T")


class RegistryError(LookupError):
    """An unknown name, or a target that does not import or is of the wrong kind."""


def load_target(target: str) -> Any:
    """Import "module:attribute" (the attribute may be dotted, e.g. a nested class)."""
    module, sep, attr = target.partition(":")
    if not sep or not module or not attr:
        raise RegistryError(f"{target!r} is not of the form module:attribute")
    try:
        obj: Any = importlib.import_module(module)
    except ImportError as exc:
        raise RegistryError(f"cannot import {module!r} for {target!r}: {exc}") from exc
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise RegistryError(f"{module!r} has no attribute {attr!r} (from {target!r})")
        obj = getattr(obj, part)
    return obj


class Registry(Generic[T]):
    """Names -> lazily imported objects. `what` names the thing in errors ("stage kind", "pipeline")."""

    def __init__(self, what: str, group: str, builtin: dict[str, str], *,
                 check: Optional[Callable[[Any], bool]] = None, error: type[Exception] = RegistryError):
        self.what, self.group, self.builtin = what, group, dict(builtin)
        self._check, self._error = check, error
        self._loaded: dict[str, T] = {}

    def targets(self) -> dict[str, str]:
        """name -> target, built-ins first, then entry points (read on every call: they can be installed late)."""
        found = dict(self.builtin)
        for ep in importlib.metadata.entry_points(group=self.group):
            if ep.name in self.builtin:
                raise self._error(f"{self.what} {ep.name!r}: entry point {ep.value!r} (group {self.group}) "
                                  f"reuses a built-in name; rename it")
            found[ep.name] = ep.value
        return found

    def names(self) -> list[str]:
        return sorted(self.targets())

    def __contains__(self, name: str) -> bool:
        return name in self.builtin or name in self.targets()

    def target(self, name: str) -> str:
        if name in self.builtin:  # built-ins never need the entry-point scan
            return self.builtin[name]
        targets = self.targets()
        if name not in targets:
            raise self._error(f"unknown {self.what} {name!r}; known: {', '.join(sorted(targets))}")
        return targets[name]

    def load(self, name: str) -> T:
        target = self.target(name)
        if target not in self._loaded:  # keyed by target: an uninstalled entry point does not linger
            try:
                obj = load_target(target)
            except RegistryError as exc:
                raise self._error(f"{self.what} {name!r}: {exc}") from exc
            if self._check is not None and not self._check(obj):
                raise self._error(f"{self.what} {name!r}: {target} gave {obj!r}, not a {self.what}")
            self._loaded[target] = obj
        return self._loaded[target]

    def load_all(self) -> dict[str, T]:
        """Every name, imported; the first broken target raises."""
        return {name: self.load(name) for name in self.names()}


def _is_stage_class(obj: Any) -> bool:
    from stages.base import Stage

    return isinstance(obj, type) and issubclass(obj, Stage)


# kind -> Stage class; group "cascadekit.stages" adds kinds from other packages.
STAGES: Registry[type] = Registry("stage kind", "cascadekit.stages", {
    "asr": "stages.asr:WhisperASR",
    "mt": "stages.translate:Translate",
    "generate": "stages.generate:Generate",
    "ensemble_mt": "stages.ensemble:EnsembleTranslate",
    "self_refine": "stages.self_refine:SelfRefine",
    "deliberate": "stages.deliberate:Deliberate",
    "mask_predict": "stages.mask_predict:MaskPredict",
    "masked_diffusion": "stages.masked_diffusion:MaskedDiffusionRepair",
}, check=_is_stage_class)
