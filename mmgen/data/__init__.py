"""Corpora as records: manifests, folders, emoji and OpenClipart loaders, image decoding, content hashes.

Importing this package is cheap: Pillow, pyvips and numpy load only when an image is decoded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mmgen._lazy import lazy_getattr
from mmgen.data.records import Record, qualify, read_records, record_to_json, unqualify, write_records

if TYPE_CHECKING:
    from mmgen.data.folder import folder_records as folder_records
    from mmgen.data.checksums import file_sha256 as file_sha256
    from mmgen.data.checksums import record_sha256 as record_sha256
    from mmgen.data.images import MAX_SIDE_DEFAULT as MAX_SIDE_DEFAULT
    from mmgen.data.images import image_size as image_size
    from mmgen.data.images import load_image as load_image
    from mmgen.data.openclipart import clean_caption as clean_caption
    from mmgen.data.sources import SOURCE_NAMES as SOURCE_NAMES
    from mmgen.data.sources import Source as Source
    from mmgen.data.sources import data_dir_default as data_dir_default
    from mmgen.data.sources import open_sources as open_sources

_LAZY = {
    "load_image": "mmgen.data.images",
    "image_size": "mmgen.data.images",
    "MAX_SIDE_DEFAULT": "mmgen.data.images",
    "file_sha256": "mmgen.data.checksums",
    "record_sha256": "mmgen.data.checksums",
    "Source": "mmgen.data.sources",
    "open_sources": "mmgen.data.sources",
    "data_dir_default": "mmgen.data.sources",
    "SOURCE_NAMES": "mmgen.data.sources",
    "folder_records": "mmgen.data.folder",
    "clean_caption": "mmgen.data.openclipart",
}

__all__ = ["Record", "qualify", "read_records", "record_to_json", "unqualify", "write_records", *_LAZY]


__getattr__ = lazy_getattr(__name__, _LAZY, globals())
