"""Semantic hashing: the autoencoder (`Hasher`) and the FAISS baselines, both saved, loaded (`load_hasher`) and
attached to an index as hashers (`BaseHasher`; a saved baseline is a `BaselineHasher`); packed codes and binary
indexes (`mmgen.index.codes`, `mmgen.index.binary`) are re-exported here.

Importing this package is cheap: torch and faiss load on first use of a name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mmgen._lazy import lazy_getattr

if TYPE_CHECKING:
    from mmgen.hashing.base import BaseHasher as BaseHasher
    from mmgen.hashing.baselines import BASELINES as BASELINES
    from mmgen.hashing.baselines import FaissBaseline as FaissBaseline
    from mmgen.index.binary import BinaryIndex as BinaryIndex
    from mmgen.index.codes import hamming_knn as hamming_knn
    from mmgen.index.codes import pack_codes as pack_codes
    from mmgen.index.codes import torch_hamming_knn as torch_hamming_knn
    from mmgen.index.codes import unpack_codes as unpack_codes
    from mmgen.hashing.model import Hasher as Hasher
    from mmgen.hashing.model import load_hasher as load_hasher
    from mmgen.hashing.saved import BaselineHasher as BaselineHasher

_LAZY = {
    "BaseHasher": "mmgen.hashing.base",
    "BASELINES": "mmgen.hashing.baselines",
    "FaissBaseline": "mmgen.hashing.baselines",
    "BinaryIndex": "mmgen.index.binary",
    "hamming_knn": "mmgen.index.codes",
    "pack_codes": "mmgen.index.codes",
    "torch_hamming_knn": "mmgen.index.codes",
    "unpack_codes": "mmgen.index.codes",
    "Hasher": "mmgen.hashing.model",
    "load_hasher": "mmgen.hashing.model",
    "BaselineHasher": "mmgen.hashing.saved",
}

__all__ = list(_LAZY)


__getattr__ = lazy_getattr(__name__, _LAZY, globals())
