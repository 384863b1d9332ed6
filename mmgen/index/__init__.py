"""FAISS indexes: presets, durable vector files, and the index folder that ties them together."""

from mmgen.index.folder import MODALITIES, IndexFolder, SyncReport
from mmgen.index.presets import DEFAULT_PRESET, Preset, list_presets, resolve_preset
from mmgen.index.shards import ShardedIndex

__all__ = [
    "DEFAULT_PRESET",
    "MODALITIES",
    "IndexFolder",
    "Preset",
    "ShardedIndex",
    "SyncReport",
    "list_presets",
    "resolve_preset",
]
