"""Packed binary codes: packing, Hamming distances, and one k-NN search that picks its backend.

Contract: a code of B bits is `uint8` of shape `(n, B // 8)`, bit `i` in byte `i // 8` at
position `i % 8` (little-endian within the byte), which is how FAISS's binary indexes and
`IndexLSH` lay them out, so codes from any source compare with any other.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mmgen.errors import ConfigError, VectorIndexError

VALID_BITS = (32, 64, 128, 256)
# Bytes of XOR results one torch chunk may hold (queries x database rows x code bytes).
_TORCH_CHUNK_BYTES = 1 << 28
_POPCOUNT = np.array([i.bit_count() for i in range(256)], dtype=np.uint8)


def check_bits(bits: int) -> int:
    """Return `bits` when it is a supported code width, else raise ConfigError."""
    if int(bits) not in VALID_BITS:
        raise ConfigError(f"code width must be one of {', '.join(map(str, VALID_BITS))} bits, not {bits}")
    return int(bits)


def pack_codes(bits: np.ndarray) -> np.ndarray:
    """(n, B) booleans (or values > 0 meaning 1) -> packed uint8 codes (n, B // 8)."""
    bits = np.asarray(bits)
    if bits.ndim != 2 or bits.shape[1] % 8:
        raise VectorIndexError(f"bits must have shape (n, B) with B a multiple of 8, got {bits.shape}")
    return np.packbits(bits > 0, axis=1, bitorder="little")


def unpack_codes(codes: np.ndarray) -> np.ndarray:
    """Packed uint8 codes (n, B // 8) -> (n, B) uint8 of 0/1."""
    codes = check_codes(codes)
    return np.unpackbits(codes, axis=1, bitorder="little")


def check_codes(codes: np.ndarray, bits: int | None = None) -> np.ndarray:
    """Codes as a C-contiguous (n, bytes) uint8 array; `bits` (when given) must match their width."""
    codes = np.ascontiguousarray(codes)
    if codes.dtype != np.uint8 or codes.ndim != 2:
        raise VectorIndexError(f"codes must be a 2-D uint8 array, got {codes.dtype} of shape {codes.shape}")
    if bits is not None and codes.shape[1] * 8 != bits:
        raise VectorIndexError(f"codes are {codes.shape[1] * 8} bits wide, expected {bits}")
    return codes


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise Hamming distances (len(a), len(b)) with numpy (small inputs and tests)."""
    a, b = check_codes(a), check_codes(b)
    if a.shape[1] != b.shape[1]:
        raise VectorIndexError(f"cannot compare {a.shape[1] * 8}-bit codes with {b.shape[1] * 8}-bit codes")
    return _POPCOUNT[a[:, None, :] ^ b[None, :, :]].sum(axis=2, dtype=np.int32)


def code_similarity(distances: np.ndarray, bits: int) -> np.ndarray:
    """Hamming distance -> similarity in [-1, 1] (the inner product of the +-1 codes over B)."""
    return (1.0 - 2.0 * np.asarray(distances, dtype=np.float32) / bits).astype(np.float32)


def asymmetric_prune(soft: np.ndarray, candidates: np.ndarray, codes: np.ndarray, keep: int) -> np.ndarray:
    """Keep the `keep` candidates per query whose codes score highest against the query's *real-valued* code.

    `soft` (n, B) holds each query's code before the sign (tanh of the hasher's logits), `candidates`
    (n, m) positions into `codes` (-1: none). The score is soft · (2b - 1) over the candidate's
    bits: asymmetric hashing (the query is not binarised, so its confident bits weigh more than
    its unsure ones), which orders a Hamming short list better than the Hamming distance does.
    """
    soft = np.asarray(soft, dtype=np.float32)
    candidates = np.asarray(candidates, dtype=np.int64)
    if soft.shape[0] != candidates.shape[0] or soft.shape[1] != codes.shape[1] * 8:
        raise VectorIndexError(f"{soft.shape} soft codes do not fit {candidates.shape} candidates of {codes.shape[1] * 8} bits")
    keep = max(1, min(int(keep), candidates.shape[1]))
    out = np.full((len(candidates), keep), -1, dtype=np.int64)
    for start in range(0, len(candidates), 256):
        cand = candidates[start : start + 256]
        signs = np.unpackbits(codes[np.maximum(cand, 0)], axis=2, bitorder="little").astype(np.float32) * 2 - 1
        scores = np.einsum("qb,qcb->qc", soft[start : start + 256], signs)
        scores[cand < 0] = -np.inf
        order = np.argsort(-scores, axis=1, kind="stable")[:, :keep]
        out[start : start + len(cand)] = np.take_along_axis(cand, order, axis=1)
    return out


# ---- k-NN by Hamming distance ------------------------------------------------------------
def hamming_knn(
    queries: np.ndarray, codes: np.ndarray, k: int, device: str = "auto"
) -> tuple[np.ndarray, np.ndarray]:
    """(distances int32, positions int64) of the k nearest codes per query; -1 pads short results.

    Backend: FAISS `GpuIndexBinaryFlat` when faiss has a GPU, else a torch popcount search on a
    CUDA device, else FAISS `IndexBinaryFlat` on the CPU. `device="cpu"` forces the last; a
    torch device string (`cuda`, `cuda:1`) forces the torch path there.
    """
    queries, codes = check_codes(queries), check_codes(codes)
    if queries.shape[1] != codes.shape[1]:
        raise VectorIndexError(f"queries are {queries.shape[1] * 8}-bit codes, the database {codes.shape[1] * 8}-bit")
    backend = choose_backend(device)
    if backend == "faiss-gpu":
        return _faiss_knn(queries, codes, k, gpu=True)
    if backend.startswith("torch:"):
        return torch_hamming_knn(queries, codes, k, backend.removeprefix("torch:"))
    return _faiss_knn(queries, codes, k, gpu=False)


def choose_backend(device: str = "auto") -> str:
    """`faiss-gpu`, `torch:cuda[:N]` or `faiss-cpu`: the one place Hamming search picks a device."""
    if device == "cpu":
        return "faiss-cpu"
    from mmgen.devices import faiss_gpu_count, torch_device

    if device == "auto" and faiss_gpu_count() > 0:
        return "faiss-gpu"
    chosen = torch_device(device)
    return f"torch:{chosen}" if chosen.startswith("cuda") else "faiss-cpu"


def _faiss_knn(queries: np.ndarray, codes: np.ndarray, k: int, gpu: bool) -> tuple[np.ndarray, np.ndarray]:
    import faiss

    bits = codes.shape[1] * 8
    index: Any = faiss.IndexBinaryFlat(bits)
    if gpu:
        index = faiss.GpuIndexBinaryFlat(faiss.StandardGpuResources(), bits)
    index.add(codes)
    dist, pos = index.search(queries, max(1, int(k)))
    return dist.astype(np.int32), pos.astype(np.int64)


def torch_hamming_knn(
    queries: np.ndarray, codes: np.ndarray, k: int, device: str = "cpu"
) -> tuple[np.ndarray, np.ndarray]:
    """Hamming k-NN with torch: XOR, a 256-entry popcount table, top-k; runs on CPU tensors or CUDA.

    Ties are broken by the lower position (FAISS leaves the order of equal distances open).
    """
    import torch

    queries, codes = check_codes(queries), check_codes(codes)
    n, nbytes = codes.shape
    k = max(1, int(k))
    kk = min(k, n)
    table = torch.from_numpy(_POPCOUNT.astype(np.int16)).to(device)
    db = torch.from_numpy(codes).to(device)
    out_d = np.full((len(queries), k), np.iinfo(np.int32).max, dtype=np.int32)
    out_i = np.full((len(queries), k), -1, dtype=np.int64)
    if n == 0 or len(queries) == 0:
        return out_d, out_i
    # the XOR bytes become int64 table indexes: budget 8 bytes per XOR byte
    q_chunk = max(1, min(len(queries), _TORCH_CHUNK_BYTES // max(1, 8 * n * nbytes)))
    positions = torch.arange(n, device=device, dtype=torch.int64)
    for start in range(0, len(queries), q_chunk):
        q = torch.from_numpy(queries[start : start + q_chunk]).to(device)
        dist = table[(q[:, None, :] ^ db[None, :, :]).long()].sum(dim=2, dtype=torch.int64)
        # distance * n + position: one sortable key that breaks ties by position
        key = dist * n + positions[None, :]
        top = torch.topk(key, kk, dim=1, largest=False, sorted=True).values
        out_d[start : start + len(q), :kk] = (top // n).to(torch.int32).cpu().numpy()
        out_i[start : start + len(q), :kk] = (top % n).cpu().numpy()
    return out_d, out_i
