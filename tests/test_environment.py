"""environment.json: what every fit records about the machine and packages its figures came from."""

from __future__ import annotations

import copy
import json
import subprocess
from importlib import metadata
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from adni_lightning.environment import (
    FILENAME,
    EnvironmentRecord,
    EnvironmentRecordError,
    differences,
    environment,
    read_record,
    summary,
    write_json,
)
from adni_lightning.main import main
from tests.helpers import tiny_args, trained_run, with_dotted

REPO = Path(__file__).resolve().parents[1]


def test_the_record_names_packages_kernels_and_the_checkout(monkeypatch):
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    record = environment()
    assert record["packages"]["torch"] == torch.__version__
    assert record["packages"]["numpy"] == np.__version__
    assert record["packages"]["lightning"] == metadata.version("lightning")
    assert set(record["packages"]) == {
        "torch",
        "lightning",
        "torchmetrics",
        "numpy",
        "nibabel",
        "scipy",
        "scikit-learn",
        "pandas",
        "jsonargparse",
    }
    assert record["torch"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert record["torch"]["threads"] == torch.get_num_threads()
    assert record["torch"]["git_version"] == torch.version.git_version
    assert not any(line.startswith("Build settings") for line in record["torch"]["libraries"])
    assert record["kernel_variables"]["ONEDNN_MAX_CPU_ISA"] == "AVX2"
    assert "ATEN_CPU_CAPABILITY" not in record["kernel_variables"]
    assert record["cpu"]["cores"] >= 1 and record["cpu"]["model"]
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0:  # a git checkout (CI's fresh clone is one)
        assert record["project"]["git_commit"] == head.stdout.strip()
        assert isinstance(record["project"]["git_dirty"], bool)
    json.dumps(record)  # plain JSON values only


def _record(**changes: object) -> dict:
    record = {
        "python": "CPython 3.11.7",
        "packages": {"torch": "2.13.0+cpu", "numpy": "2.4.6", "scipy": None},
        "torch": {
            "version": "2.13.0+cpu",
            "git_version": "abc",
            "cuda": None,
            "libraries": ["Intel(R) MKL-DNN v3.12.0 (Git Hash 80afa71)"],
            "cpu_capability": "AVX512",
            "threads": 2,
            "interop_threads": 2,
        },
        "cpu": {
            "model": "AMD EPYC",
            "id": "AuthenticAMD family 25 model 17 stepping 1",
            "cores": 2,
            "simd_flags": ["avx", "avx2", "avx512f", "fma"],
        },
        "gpus": [],
        "cudnn": None,
        "kernel_variables": {},
        "project": {"git_commit": "c1", "git_dirty": False},
    }
    return with_dotted(record, **changes)


def test_differences_name_each_changed_fact_and_nothing_else():
    before = _record()
    assert differences(before, copy.deepcopy(before)) == []
    now = _record(
        **{
            "packages.numpy": "2.4.7",
            "packages.scipy": "1.17.1",
            "torch.cpu_capability": "AVX2",
            "cpu.id": "AuthenticAMD family 25 model 1 stepping 1",
            "cpu.simd_flags": ["avx", "avx2", "fma", "sse4_2"],
            "kernel_variables": {"ONEDNN_MAX_CPU_ISA": "AVX2"},
            "project.git_commit": "c2",
        }
    )
    assert differences(before, now) == [
        "numpy: 2.4.6 -> 2.4.7",
        "scipy: None -> 1.17.1",
        "torch cpu_capability: AVX512 -> AVX2",
        "CPU id: AuthenticAMD family 25 model 17 stepping 1 -> AuthenticAMD family 25 model 1 stepping 1",
        "CPU flags: -avx512f +sse4_2",
        "$ONEDNN_MAX_CPU_ISA: (unset) -> AVX2",
        "project commit: c1 -> c2",
    ]


def test_summary_names_cpu_kernels_and_torch_build():
    assert summary(_record()) == (
        "AMD EPYC (AuthenticAMD family 25 model 17 stepping 1, 2 cores, ATen kernels AVX512), "
        "torch 2.13.0+cpu (oneDNN v3.12.0), Python 3.11.7"
    )
    assert summary(_record(kernel_variables={"ONEDNN_MAX_CPU_ISA": "AVX2"})).endswith(
        "Python 3.11.7, ONEDNN_MAX_CPU_ISA=AVX2"
    )


def test_write_json_replaces_whole_files_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "sub" / "record.json"
    write_json({"a": 1}, path)
    with pytest.raises(TypeError):
        write_json({"a": object()}, path)  # fails while serialising: the old file stays whole
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in path.parent.iterdir()] == ["record.json"]


def test_only_rank_zero_writes(tmp_path):
    callback = EnvironmentRecord()
    callback.on_fit_start(SimpleNamespace(is_global_zero=False, default_root_dir=str(tmp_path)), None)
    assert not (tmp_path / FILENAME).exists()
    callback.on_fit_start(SimpleNamespace(is_global_zero=True, default_root_dir=str(tmp_path)), None)
    assert read_record(tmp_path / FILENAME)["packages"]["torch"] == torch.__version__


def test_fit_records_its_environment_and_a_resume_keeps_the_first(cohort_template, tmp_path):
    made = trained_run(tmp_path, cohort_template)
    first = read_record(made["run"] / FILENAME)
    assert "previous" not in first and first["torch"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    main(tiny_args("fit", made["run"], made["cohort"], "--trainer.max_epochs", "2", "--ckpt_path", "last"))
    resumed = read_record(made["run"] / FILENAME)
    assert resumed["previous"] == [first]
    assert resumed["date"] >= first["date"]


def test_a_foreign_environment_json_is_refused_not_overwritten(cohort, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / FILENAME).write_text("{not json")
    with pytest.raises(EnvironmentRecordError) as error:
        main(tiny_args("fit", run, cohort, "--trainer.max_epochs", "1"))
    assert str(error.value) == (
        f"{run / FILENAME} is not an environment record of an earlier fit (Expecting property name enclosed in "
        "double quotes: line 1 column 2 (char 1)): delete it, or run in another folder (--trainer.default_root_dir)"
    )
    assert (run / FILENAME).read_text() == "{not json"
