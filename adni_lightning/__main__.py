"""``python -m adni_lightning COMMAND ...`` (see :mod:`adni_lightning.main`)."""

from adni_lightning.main import main

main()
