"""Evaluations on held-out data: retrieval Recall@k (CLIP_benchmark's definition), the fixed train/eval
protocols, binary codes against exact search, captions (BLEU-4, CIDEr) and generated images.

Importing this package is cheap: numpy and the modules load on first use of a name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mmgen._lazy import lazy_getattr

if TYPE_CHECKING:
    from mmgen.eval.protocols import PROTOCOLS as PROTOCOLS
    from mmgen.eval.protocols import build_protocol as build_protocol
    from mmgen.eval.protocols import write_protocol as write_protocol
    from mmgen.eval.retrieval import RetrievalReport as RetrievalReport
    from mmgen.eval.retrieval import evaluate_manifest as evaluate_manifest
    from mmgen.eval.retrieval import evaluate_retrieval as evaluate_retrieval
    from mmgen.eval.retrieval import recall_at_k as recall_at_k
    from mmgen.eval.hashing import evaluate_hashing as evaluate_hashing
    from mmgen.eval.hashing import HashingReport as HashingReport
    from mmgen.eval.captions import evaluate_captions as evaluate_captions
    from mmgen.eval.captions import CaptionEvalSettings as CaptionEvalSettings
    from mmgen.eval.captions import CaptionEvalReport as CaptionEvalReport
    from mmgen.eval.generation import evaluate_generation as evaluate_generation
    from mmgen.eval.generation import GenerationReport as GenerationReport

_LAZY = {
    "evaluate_hashing": "mmgen.eval.hashing",
    "HashingReport": "mmgen.eval.hashing",
    "evaluate_captions": "mmgen.eval.captions",
    "CaptionEvalSettings": "mmgen.eval.captions",
    "CaptionEvalReport": "mmgen.eval.captions",
    "evaluate_generation": "mmgen.eval.generation",
    "GenerationReport": "mmgen.eval.generation",
    "RetrievalReport": "mmgen.eval.retrieval",
    "evaluate_manifest": "mmgen.eval.retrieval",
    "evaluate_retrieval": "mmgen.eval.retrieval",
    "recall_at_k": "mmgen.eval.retrieval",
    "PROTOCOLS": "mmgen.eval.protocols",
    "build_protocol": "mmgen.eval.protocols",
    "write_protocol": "mmgen.eval.protocols",
}

__all__ = list(_LAZY)


__getattr__ = lazy_getattr(__name__, _LAZY, globals())
