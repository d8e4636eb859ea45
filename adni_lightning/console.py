"""What the console shows: the project's INFO lines, no known noise, and a user's error as one line.

:func:`error_message` finds the :class:`~adni_lightning.errors.ProjectError` (or the full disk) behind any exception,
also one raised in a process ``ddp_spawn`` started; ``python -m adni_lightning`` prints it alone.
"""

from __future__ import annotations

import logging
import warnings

from torch.multiprocessing.spawn import ProcessRaisedException

from adni_lightning.atomic import DISK_FULL, READ_ONLY, write_error
from adni_lightning.errors import ProjectError

#: Messages that say nothing to this project's users, silenced by their exact text (not by category).
KNOWN_NOISE = (
    # a partial validation (fast_dev_run, limit_val_batches) may lack a class; full sides hold every class (split.py)
    r"No positive samples in targets, true positive value should be meaningless.*",
    r".*isinstance\(treespec, LeafSpec\)` is deprecated.*",  # inside Lightning, on every run (torch >= 2.9)
    r"Checkpoint directory .* exists and is not empty.*",  # resume: check_fit already refuses an overwrite
)


def setup() -> None:
    """Show the project's INFO messages (split table, cache and cohort progress) and hide known noise, once."""
    logger = logging.getLogger("adni_lightning")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(
            lambda record: "litlogger" not in record.getMessage()
        )
    for pattern in KNOWN_NOISE:
        warnings.filterwarnings("ignore", message=pattern)


def project_error(error: BaseException) -> ProjectError | None:
    """The project error that ``error`` is or was raised from (jsonargparse wraps an option group's own), if any."""
    cause: BaseException | None = error
    while cause is not None and not isinstance(cause, ProjectError):
        cause = cause.__cause__
    return cause


def _storage_fault(error: BaseException | None) -> OSError | None:
    """The full disk or read-only folder behind ``error``, wherever it was written (Lightning's event files and
    ``config.yaml``, a library's own files): a fault of the storage, not of the code, so it is said in one line too.
    """
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in (*DISK_FULL, *READ_ONLY):
            return error
        error = error.__cause__ or error.__context__
    return None


def error_message(error: Exception) -> str | None:
    """The message of a project error, also of one raised in a process ``ddp_spawn`` started: torch re-raises
    that in the parent as the child's traceback text (``ProcessRaisedException``), ending in ``module.Class: message``.
    """
    found = project_error(error)
    if found is not None:
        return str(found)
    storage = _storage_fault(error)
    if storage is not None:
        return str(write_error(storage.filename or "a file of the run", storage, "--trainer.default_root_dir"))
    if not isinstance(error, ProcessRaisedException):
        return None
    names, classes = set(), [ProjectError]
    while classes:
        cls = classes.pop()
        names.add(f"{cls.__module__}.{cls.__qualname__}")
        classes += cls.__subclasses__()
    text = str(error)
    lines = text[text.rfind("Traceback (most recent call last):") :].splitlines()
    for index, line in enumerate(lines):
        name, colon, first = line.partition(": ")
        if colon and name in names:
            return "\n".join([first, *lines[index + 1 :]]).strip()
    return None
