"""`mmgen.durable.replacing`: a file is replaced whole or not at all, and a full disk is one clear error."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from mmgen.durable import is_disk_full, replacing
from mmgen.errors import DiskFullError


def test_a_finished_write_replaces_the_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "a.json"
    with replacing(path, "a") as tmp:
        assert tmp.parent == path.parent and tmp != path
        tmp.write_text("new")
    assert path.read_text() == "new" and [p.name for p in path.parent.iterdir()] == ["a.json"]


@pytest.mark.parametrize(
    ("error", "expected"),
    [(OSError(errno.ENOSPC, "No space left on device"), DiskFullError),
     (OSError(errno.EDQUOT, "Disk quota exceeded"), DiskFullError),
     (RuntimeError("write error in x: 10 != 20 (No space left on device)"), DiskFullError),  # FAISS
     (RuntimeError("I/O error: No space left on device (os error 28)"), DiskFullError),  # safetensors
     (OSError(errno.EACCES, "Permission denied"), OSError),
     (ValueError("bad value"), ValueError),
     (KeyboardInterrupt(), KeyboardInterrupt)],
)  # fmt: skip
def test_a_failed_write_keeps_the_old_file_and_names_a_full_disk(tmp_path: Path, error: BaseException,
                                                                expected: type[BaseException]) -> None:  # fmt: skip
    path = tmp_path / "weights.bin"
    path.write_bytes(b"old")
    with pytest.raises(expected) as raised:
        with replacing(path, "the weights") as tmp:
            tmp.write_bytes(b"half")
            raise error
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["weights.bin"]
    if expected is DiskFullError:
        assert raised.value.path == str(path) and "disk full while writing the weights" in str(raised.value)
    else:
        assert raised.value is error


def test_an_opaque_error_is_a_full_disk_only_when_the_disk_has_no_room(tmp_path: Path) -> None:
    opaque = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")  # torch.save
    assert not is_disk_full(opaque, tmp_path)  # this test's disk has room: the error is not disk full
    assert not is_disk_full(KeyboardInterrupt(), tmp_path)
