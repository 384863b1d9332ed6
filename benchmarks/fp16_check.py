"""flat-fp16 against flat on saved indexes: one query at a time, top-10 sets and scores compared.

    python benchmarks/fp16_check.py WORKSPACE:MODALITY [...]     # e.g. indexes:text indexes:image

For each index `default` (built with `flat`) it builds the flat-fp16 form of the same vectors in memory
and times 300 queries (stored vectors plus a little noise, seed 0) on both, one FAISS thread, warm loop.
The fp16 side is the default search: the best 40 re-scored and certified (`certified_rerank`); it also
counts the queries whose 40 could not be certified and were widened."""

import statistics
import sys
import time
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mmgen.index import IndexFolder  # noqa: E402
from mmgen.search_modes import certified_rerank, fp16_slack  # noqa: E402
from mmgen.workspace import Workspace  # noqa: E402

for wsp, mod in (arg.rsplit(":", 1) for arg in sys.argv[1:]):
    folder = IndexFolder.open(Workspace.resolve(Path(wsp)).index_dir("default"))
    idx = folder.faiss(mod)
    vf = folder.vectors(mod)
    inner = faiss.downcast_index(idx.index.index)
    xb = faiss.rev_swig_ptr(inner.get_xb(), idx.count * idx.dim).reshape(-1, idx.dim)
    labels = faiss.rev_swig_ptr(idx.index.id_map.data(), idx.count).copy()
    sq = faiss.IndexIDMap2(
        faiss.IndexScalarQuantizer(idx.dim, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
    )
    sq.add_with_ids(xb, labels)
    rng = np.random.default_rng(0)
    q = xb[rng.choice(len(xb), 300)] + 0.02 * rng.standard_normal((300, idx.dim)).astype("float32")
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    faiss.omp_set_num_threads(1)
    t1, t2, same, diff, widened = [], [], 0, 0.0, 0
    slack = fp16_slack(vf)

    def fp16_search(qs, depth):
        global widened
        widened += depth > 40
        return sq.search(qs, depth)

    for i in range(300):
        a = time.perf_counter()
        s1, i1 = idx.index.search(q[i : i + 1], 10)
        b = time.perf_counter()
        s2, i2 = certified_rerank(q[i : i + 1], fp16_search, vf, 10, 40, slack)
        c = time.perf_counter()
        t1.append(b - a)
        t2.append(c - b)
        same += set(i1[0]) == set(i2[0])
        diff = max(diff, float(np.abs(np.sort(s1[0]) - np.sort(s2[0])).max()))
    print(
        wsp,
        mod,
        idx.count,
        idx.dim,
        "flat",
        round(1000 * statistics.median(t1), 3),
        "fp16+rerank",
        round(1000 * statistics.median(t2), 3),
        "same top-10 sets",
        same,
        "/300, max score diff",
        diff,
        "widened",
        widened,
    )
