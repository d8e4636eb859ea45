"""The root of every error this project raises for a user's mistake or a fault in their data.

A leaf module (it imports nothing of the package), so any layer can raise a project error without an import
circle. ``python -m adni_lightning`` prints a :class:`ProjectError` as its message alone (exit 1); anything else
is a bug and keeps its traceback.
"""

from __future__ import annotations


class ProjectError(Exception):
    """An error whose message says what is wrong and what to do: shown alone, without a traceback."""


class OptionError(ProjectError, ValueError):
    """An option's value cannot work; the message names the option and the value."""
