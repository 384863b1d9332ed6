"""The CPU torchvision fix, each check in a fresh interpreter (torchvision can be imported only once)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from typing import Any

import pytest

HAND_BOXES = [[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [5, 0, 15, 10]]
HAND_SCORES = [0.9, 0.8, 0.7, 0.85]

FIXED = textwrap.dedent(
    """
    import json, sys, threading
    from mmgen.compat import ensure_torchvision

    results = []
    threads = [threading.Thread(target=lambda: results.append(ensure_torchvision())) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    again = ensure_torchvision()

    import torch, torchvision, open_clip, sentence_transformers

    def nms(boxes, scores, thr):
        return torchvision.ops.nms(torch.tensor(boxes, dtype=torch.float32), torch.tensor(scores), thr).tolist()

    g = torch.Generator().manual_seed(0)
    xy = torch.rand(60, 2, generator=g) * 30
    wh = torch.rand(60, 2, generator=g) * 15 + 5
    random_boxes = torch.cat([xy, xy + wh], 1).tolist()
    random_scores = torch.rand(60, generator=g).tolist()
    print(json.dumps({
        "threads": results,
        "again": again,
        "hand_05": nms(%(boxes)r, %(scores)r, 0.5),
        "hand_03": nms(%(boxes)r, %(scores)r, 0.3),
        "empty": torchvision.ops.nms(torch.zeros(0, 4), torch.zeros(0), 0.5).tolist(),
        "batched": torchvision.ops.batched_nms(
            torch.tensor(%(boxes)r, dtype=torch.float32), torch.tensor(%(scores)r), torch.tensor([0, 1, 0, 0]), 0.5
        ).tolist(),
        "random_boxes": random_boxes,
        "random_scores": random_scores,
        "random": {str(t): nms(random_boxes, random_scores, t) for t in (0.1, 0.3, 0.5, 0.7)},
    }))
    """
) % {"boxes": HAND_BOXES, "scores": HAND_SCORES}


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


def _reference_nms(boxes: list[list[float]], scores: list[float], threshold: float) -> list[int]:
    """Brute force: in falling score order, keep a box unless it overlaps a kept box by IoU > threshold."""

    def iou(a: list[float], b: list[float]) -> float:
        w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        inter = w * h
        return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)

    kept: list[int] = []
    for i in sorted(range(len(boxes)), key=lambda i: -scores[i]):
        if all(iou(boxes[i], boxes[k]) <= threshold for k in kept):
            kept.append(i)
    return kept


@pytest.fixture(scope="module")
def import_fails_unfixed() -> bool:
    """Whether plain `import torchvision` fails here (a CPU torch beside torchvision's CUDA build)."""
    run = _python("import torchvision")
    if run.returncode == 0:
        return False
    assert "torchvision::nms does not exist" in run.stderr, run.stderr[-2000:]
    return True


@pytest.fixture(scope="module")
def fixed() -> dict[str, Any]:
    run = _python(FIXED)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_import_fails_without_the_fix(import_fails_unfixed: bool) -> None:
    if not import_fails_unfixed:
        pytest.skip("torchvision imports without the fix here (its _C.so loads, e.g. a matching GPU build)")


def test_importing_mmgen_compat_changes_nothing() -> None:
    run = _python("import sys, mmgen.compat; print(sorted(m for m in ('torch', 'torchvision') if m in sys.modules))")
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"


def test_fix_makes_torchvision_open_clip_and_sentence_transformers_importable(
    fixed: dict[str, Any], import_fails_unfixed: bool
) -> None:
    assert fixed["threads"] == [import_fails_unfixed] * 8  # applied exactly when needed, same answer in every thread
    assert fixed["again"] is import_fails_unfixed  # idempotent


def test_nms_hand_checked(fixed: dict[str, Any]) -> None:
    # IoU(0,1) = 81/119 = 0.68, IoU(0,3) = 50/150 = 0.33, IoU(1,3) = 54/146 = 0.37; box 2 overlaps nothing.
    assert fixed["hand_05"] == [0, 3, 2]
    assert fixed["hand_03"] == [0, 2]
    assert fixed["empty"] == []
    # Categories keep box 1 (alone in class 1); within class 0 the threshold-0.5 result stands.
    assert fixed["batched"] == [0, 3, 1, 2]


@pytest.mark.parametrize("threshold", [0.1, 0.3, 0.5, 0.7])
def test_nms_matches_brute_force(fixed: dict[str, Any], threshold: float) -> None:
    expected = _reference_nms(fixed["random_boxes"], fixed["random_scores"], threshold)
    assert fixed["random"][str(threshold)] == expected
    assert 1 < len(expected) < len(fixed["random_boxes"])  # the example actually suppresses something


def test_reference_nms_agrees_with_the_hand_count() -> None:
    assert _reference_nms(HAND_BOXES, HAND_SCORES, 0.5) == [0, 3, 2]


def test_fix_recovers_after_a_failed_import(import_fails_unfixed: bool) -> None:
    if not import_fails_unfixed:
        pytest.skip("torchvision imports without the fix here")
    code = textwrap.dedent(
        """
        try:
            import torchvision
        except RuntimeError:
            pass
        from mmgen.compat import ensure_torchvision
        assert ensure_torchvision()
        import torch, torchvision
        print(torchvision.ops.nms(torch.tensor([[0, 0, 1, 1.0], [0, 0, 1, 1]]), torch.tensor([1.0, 2]), 0.5).tolist())
        """
    )
    run = _python(code)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "[1]"
