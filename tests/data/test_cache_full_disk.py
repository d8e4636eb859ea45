"""A cache build on a full disk ends in one line that says the disk is full, and leaves nothing half-written."""

from __future__ import annotations

import errno
import os

import pytest

from adni_lightning.data.cache import CacheDirError, VolumeCache
from tests.data.test_cache import PARAMS, _items
from tests.test_atomic import leftovers, tiny_disk  # noqa: F401 (a fixture)


def full_message(root: object) -> str:
    return (
        f"cache directory {root} cannot be written: the disk is full (No space left on device); free space or point "
        "data.cache_dir at a folder with free space"
    )


def test_a_full_disk_is_named_as_such(cohort, tmp_path, monkeypatch):
    def no_space(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(VolumeCache, "write", no_space)
    root = tmp_path / "cache"
    with pytest.raises(CacheDirError) as refused:
        VolumeCache(root, PARAMS).build(_items(cohort)[:2])
    assert str(refused.value) == full_message(root)


def test_a_real_full_disk_leaves_only_whole_entries(cohort, tiny_disk):  # noqa: F811 (the fixture)
    root = tiny_disk / "cache"
    cache = VolumeCache(root, PARAMS)
    items = _items(cohort)
    with pytest.raises(CacheDirError) as refused:
        cache.build(items)
    assert str(refused.value) == full_message(root)
    assert leftovers(root) == []
    entries = sorted(root.glob("*.npy"))
    assert 0 < len(entries) < len(items)  # it filled up on the way
    whole = [e for e in entries if cache.is_valid(e)]
    assert len(whole) >= len(entries) - 1  # at most the entry whose sidecar did not fit: invalid, so rebuilt
