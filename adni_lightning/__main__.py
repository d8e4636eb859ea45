"""``python -m adni_lightning COMMAND ...`` (see :mod:`adni_lightning.main`)."""

from adni_lightning.main import run_from_command_line

run_from_command_line()
