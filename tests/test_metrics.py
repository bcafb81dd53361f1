"""Unit tests of kdseg.metrics: hand-built confusion matrices and dataset-level accumulation."""

from __future__ import annotations

import json
import math

import pytest
import torch

from kdseg.metrics import ConfusionMatrix

IGN = 255


def test_hand_built_matrix_and_ious() -> None:
    # 3 classes; class 2 never appears in ground truth or prediction.
    target = torch.tensor([[0, 0, 0, 1], [1, 1, IGN, IGN]])
    pred = torch.tensor([[0, 0, 1, 1], [1, 0, 2, 0]])  # predictions at ignored pixels must not count
    cm = ConfusionMatrix(3, IGN)
    cm.update(pred, target)
    assert cm.matrix.dtype == torch.int64
    assert cm.matrix.tolist() == [[2, 1, 0], [1, 2, 0], [0, 0, 0]]
    iou = cm.iou()
    # class 0: tp 2, fp 1, fn 1 -> 2/4; class 1: tp 2, fp 1, fn 1 -> 2/4; class 2: absent -> NaN
    assert iou[0].item() == pytest.approx(0.5)
    assert iou[1].item() == pytest.approx(0.5)
    assert math.isnan(iou[2].item())
    assert cm.miou() == pytest.approx(0.5)  # absent class excluded from the mean
    assert cm.pixel_accuracy() == pytest.approx(4 / 6)
    out = cm.compute()
    assert out["miou"] == pytest.approx(0.5)
    assert out["pixel_acc"] == pytest.approx(4 / 6)
    assert out["per_class_iou"] == [pytest.approx(0.5), pytest.approx(0.5), None]
    json.dumps(out)  # JSON-serialisable as is


def test_class_only_in_prediction_counts_with_iou_zero() -> None:
    target = torch.tensor([[0, 0, 1, 1]])
    pred = torch.tensor([[0, 2, 1, 1]])
    cm = ConfusionMatrix(4, IGN)
    cm.update(pred, target)
    iou = cm.iou()
    assert iou[:3].tolist() == pytest.approx([0.5, 1.0, 0.0])
    assert math.isnan(iou[3].item())
    assert cm.miou() == pytest.approx((0.5 + 1.0 + 0.0) / 3)


def test_accumulation_equals_one_big_update_and_is_not_mean_of_batches() -> None:
    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 5, (6, 8, 8), generator=g)
    target[target == 4] = IGN
    pred = torch.randint(0, 5, (6, 8, 8), generator=g)
    big = ConfusionMatrix(5, IGN)
    big.update(pred, target)
    acc = ConfusionMatrix(5, IGN)
    per_batch = []
    for i in range(0, 6, 2):
        acc.update(pred[i : i + 2], target[i : i + 2])
        one = ConfusionMatrix(5, IGN)
        one.update(pred[i : i + 2], target[i : i + 2])
        per_batch.append(one)
    assert torch.equal(acc.matrix, big.matrix)
    assert acc.miou() == big.miou()
    merged = per_batch[0] + per_batch[1] + per_batch[2]
    assert torch.equal(merged.matrix, big.matrix)
    assert torch.equal(per_batch[0].matrix, ConfusionMatrix(5, IGN).merge(per_batch[0]).matrix)
    assert int(big.matrix.sum()) == int((target != IGN).sum())


def test_logits_input_equals_argmax_input() -> None:
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 4, 5, 5, generator=g)
    target = torch.randint(0, 4, (3, 5, 5), generator=g)
    a, b = ConfusionMatrix(4, IGN), ConfusionMatrix(4, IGN)
    a.update(logits, target)
    b.update(logits.argmax(1), target)
    assert torch.equal(a.matrix, b.matrix)


def test_reset_empty_and_errors() -> None:
    cm = ConfusionMatrix(3, IGN)
    assert math.isnan(cm.miou()) and math.isnan(cm.pixel_accuracy())
    cm.update(torch.zeros(1, 2, 2, dtype=torch.long), torch.full((1, 2, 2), IGN))  # all ignored
    assert int(cm.matrix.sum()) == 0
    cm.update(torch.zeros(1, 2, 2, dtype=torch.long), torch.zeros(1, 2, 2, dtype=torch.long))
    assert cm.miou() == 1.0
    cm.reset()
    assert int(cm.matrix.sum()) == 0
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        cm.update(torch.zeros(1, 2, 2, dtype=torch.long), torch.full((1, 2, 2), 7))
    with pytest.raises(ValueError, match="shapes differ"):
        cm.update(torch.zeros(1, 2, 2, dtype=torch.long), torch.zeros(1, 3, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="classes"):
        cm.update(torch.zeros(1, 5, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long))


def test_gathered_image_counts_equal_update() -> None:
    """image_counts -> (gather across processes) -> add_image_counts is update, split over batches."""
    g = torch.Generator().manual_seed(2)
    target = torch.randint(0, 5, (5, 6, 6), generator=g)
    target[target == 4] = IGN
    target[3] = IGN  # an image without labelled pixels: not counted in the per-image mean
    pred = torch.randint(0, 5, (5, 6, 6), generator=g)
    whole = ConfusionMatrix(5, IGN, per_image=True)
    whole.update(pred, target)
    counted = ConfusionMatrix(5, IGN, per_image=True)
    counts = torch.cat([counted.image_counts(pred[i : i + 2], target[i : i + 2]) for i in range(0, 5, 2)])
    assert counts.shape == (5, 5, 5) and int(counts[3].sum()) == 0
    counted.add_image_counts(counts)
    assert torch.equal(counted.matrix, whole.matrix)
    assert torch.equal(counted.image_stats, whole.image_stats)
    assert counted.compute() == whole.compute()
    with pytest.raises(ValueError, match=r"\[B, 5, 5\]"):
        counted.add_image_counts(torch.zeros(2, 4, 4, dtype=torch.long))
