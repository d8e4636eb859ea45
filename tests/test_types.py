"""`make typecheck`: mypy refuses a class index where a FreeSurfer label id belongs and a batch key that does not exist,
and the package itself type-checks."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from mypy import api

REPO = Path(__file__).resolve().parents[1]

# Each misuse is marked with the error code mypy must give on its line; unmarked lines must pass.
SNIPPET = """\
from collections.abc import Sequence

import torch

from adni_lightning.data.batch import Batch
from adni_lightning.data.labels import FREESURFER_LUT, channel_lookup, label_id
from adni_lightning.evaluation.metrics import prob_columns
from adni_lightning.vocabulary import ClassIndex, ClassName, CompactLabel, LabelId


def structure(label: LabelId) -> str:
    return FREESURFER_LUT[label][0]


def targets(batch: Batch) -> torch.Tensor:
    return batch["label"]


def classes() -> Sequence[ClassName]:
    return [ClassName("CN"), ClassName("AD")]


structure(LabelId(17))
structure(label_id(CompactLabel(3)))
channel_lookup({"hippocampus": [LabelId(17), LabelId(53)]})
prob_columns(classes())
structure(ClassIndex(2))  # E: arg-type
structure(17)  # E: arg-type
FREESURFER_LUT[ClassIndex(2)]  # E: index
label_id(LabelId(17))  # E: arg-type
channel_lookup({"hippocampus": [ClassIndex(1)]})  # E: list-item
prob_columns(["CN", "AD"])  # E: list-item


def wrong_key(batch: Batch) -> torch.Tensor:
    return batch["labels"]  # E: typeddict-item


def wrong_value(batch: Batch) -> None:
    batch["label"] = [0, 1]  # E: typeddict-item
"""


def _mypy(*args: str) -> tuple[str, int]:
    """mypy in-process on the repository's configuration; the package is read from this checkout (MYPYPATH), not
    from wherever the environment installed it.
    """
    stdout, stderr, status = api.run(["--config-file", str(REPO / "pyproject.toml"), *args])
    return stdout + stderr, status


@pytest.fixture(autouse=True)
def in_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)  # the package and mypy's cache (.mypy_cache) of this checkout
    monkeypatch.setenv("MYPYPATH", str(REPO))


def test_mypy_refuses_a_class_index_for_a_label_id_and_a_wrong_batch_key(tmp_path):
    source = tmp_path / "misuse.py"
    source.write_text(SNIPPET)
    output, status = _mypy("--no-error-summary", "--hide-error-context", str(source))
    expected = {
        (number, code)
        for number, line in enumerate(SNIPPET.splitlines(), start=1)
        if (code := re.search(r"# E: ([a-z-]+)$", line)) and (code := code.group(1))
    }
    found = {(int(m[1]), m[2]) for m in re.finditer(r"misuse\.py:(\d+): error: .*\[([a-z-]+)\]$", output, re.M)}
    assert found == expected, output
    assert status == 1
    assert 'Argument 1 to "structure" has incompatible type "ClassIndex"; expected "LabelId"' in output
    assert 'TypedDict "Batch" has no key "labels"' in output


def test_the_package_type_checks():
    output, status = _mypy()
    assert status == 0, output
    assert output.startswith("Success: no issues found"), output
