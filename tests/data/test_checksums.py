"""Content hashes: streamed file hash, record hash framing and determinism."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from mmgen.data import Record, checksums, file_sha256, record_sha256
from mmgen.errors import ImageLoadError


def test_file_sha256_streams_in_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = bytes(range(256)) * 1000
    (tmp_path / "f.bin").write_bytes(data)
    monkeypatch.setattr(checksums, "CHUNK_SIZE", 1000)
    assert file_sha256(tmp_path / "f.bin") == hashlib.sha256(data).hexdigest()


def test_record_sha256_covers_image_text_and_group(tmp_path: Path) -> None:
    img = tmp_path / "a.png"
    img.write_bytes(b"\x89PNG fake bytes")
    base = Record(key="k", image=str(img), text="bus", group="1F68C", meta={"x": 1})
    h = record_sha256(base)
    assert h == record_sha256(Record(key="other", image=str(img), text="bus", group="1F68C"))  # key/meta excluded
    assert (
        len(
            {
                h,
                record_sha256(Record(key="k", image=str(img), text="bus!", group="1F68C")),
                record_sha256(Record(key="k", image=str(img), text="bus")),
                record_sha256(Record(key="k", text="bus", group="1F68C")),
            }
        )
        == 4
    )
    # framing: moving a character between text and group changes the hash
    assert record_sha256(Record(key="k", text="ab", group="c")) != record_sha256(Record(key="k", text="a", group="bc"))
    img.write_bytes(b"\x89PNG other bytes")
    assert record_sha256(base) != h


def test_record_sha256_missing_image(tmp_path: Path) -> None:
    with pytest.raises(ImageLoadError, match="file not found"):
        record_sha256(Record(key="k", image=str(tmp_path / "gone.png")))
