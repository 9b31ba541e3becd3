"""A policy named by an environment variable (``GCN_CPU_CONV``, ``GCN_CPU_SPLIT``), read once.

Why a module: each CPU speed-up has an ``auto`` default and a few named alternatives, and a bad
value must fail the same way everywhere (ValueError with the variable and the choices: the
service's settings and the command line turn it into their one-line error)."""

from __future__ import annotations

import os


def from_env(variable: str, choices: tuple[str, ...], default: str = "auto") -> str:
    """The value of ``variable`` (case and surrounding space ignored; empty: ``default``), or
    ValueError if it is not one of ``choices``."""
    value = os.environ.get(variable, default).strip().lower() or default
    if value not in choices:
        raise ValueError(f"{variable} must be one of {', '.join(choices)}, not {value!r}")
    return value
