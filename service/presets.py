"""Presets as the service sees them: checked when a learning job is submitted, not when it runs.

``models.presets`` is the authority; this module only turns its ``PresetError`` into the name
of the request field at fault, so that a bad override is a 422 naming ``overrides.<field>``
before anything is queued.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from models.presets import Preset, PresetError, get_preset, preset_names

__all__ = ["PresetProblem", "preset_names", "resolve"]

_FIELDS = {f.name for f in dataclasses.fields(Preset)}


class PresetProblem(ValueError):
    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def resolve(name: str, overrides: dict[str, Any]) -> Preset:
    """The preset ``name`` with ``overrides`` applied; ``PresetProblem`` names the field at fault."""
    if name not in preset_names():
        raise PresetProblem("preset", f"unknown preset {name!r}; choose one of: {', '.join(preset_names())}")
    try:
        return get_preset(name, overrides)
    except PresetError as e:
        raise PresetProblem(_field_of(str(e), overrides), str(e)) from None
    except (TypeError, ValueError) as e:  # a value of the wrong type for a dataclass field
        raise PresetProblem("overrides", f"bad override: {e}") from None


def _field_of(message: str, overrides: dict[str, Any]) -> str:
    unknown = re.match(r"unknown preset field\(s\): ([\w, ]+)", message)
    if unknown:
        return f"overrides.{unknown.group(1).split(',')[0].strip()}"
    first = re.match(r"(\w+)", message)
    if first and first.group(1) in _FIELDS:
        return f"overrides.{first.group(1)}"
    return "overrides"
