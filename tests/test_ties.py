"""Ties and sample-size edges decided the way the reference tools decide them: top-1 with exactly tied logits
takes the first maximal index (torch.argmax's rule), top-k takes tied classes in index order; KID with a
subset larger than a sample set is an error (torch-fidelity's rule), not a silently smaller subset."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from visionzoo.tasks.classification.metrics import ClassificationMeter
from visionzoo.tasks.generative.fid import kid_from_features


def test_top1_with_tied_logits_takes_the_first_maximal_index():
    # rows: all ten tied (topk returns 8, 6, 7 here); a tie between classes 1, 2 and 4; a tie at the top with
    # the target second in index order; no tie
    logits = torch.tensor([[0.0] * 10,
                           [0, 5, 5, 1, 5, 0, 0, 0, 0, 0],
                           [3, 0, 0, 0, 0, 0, 0, 3, 0, 0],
                           [0, 0, 0, 0, 0, 0, 0, 0, 0, 9.0]])
    targets = torch.tensor([0, 1, 7, 9])
    assert logits.argmax(1).tolist() == [0, 1, 0, 9]  # the rule itself, as torch documents it
    meter = ClassificationMeter(10, topk=(1, 2))
    meter.update(logits, targets)
    m = meter.compute()
    assert meter.confusion[0, 0] == 1 and meter.confusion[1, 1] == 1 and meter.confusion[7, 0] == 1
    assert m["top1"] == pytest.approx(3 / 4)  # row 2 predicts class 0, not its target 7
    # top-2 takes tied classes in index order: row 2's two best are 0 and 7 (a hit), row 1's are 1 and 2
    assert m["top2"] == pytest.approx(1.0)
    tied = ClassificationMeter(10, topk=(1, 2))
    tied.update(logits[1:2], torch.tensor([4]))  # class 4 ties with 1 and 2 but comes third
    assert tied.compute()["top1"] == 0.0 and tied.compute()["top2"] == 0.0
    # the same logits in another batch order give the same counts (no order-dependent tie breaking)
    again = ClassificationMeter(10, topk=(1, 2))
    again.update(logits.flip(0), targets.flip(0))
    assert torch.equal(again.confusion, meter.confusion) and torch.equal(again.topk_correct, meter.topk_correct)


def test_kid_subset_larger_than_a_sample_set_is_an_error():
    rng = np.random.default_rng(0)
    real, fake = rng.normal(size=(30, 4)), rng.normal(size=(20, 4))
    with pytest.raises(ValueError, match=r"subset_size=21 is larger than the 20 fake samples"):
        kid_from_features(real, fake, subsets=2, subset_size=21)
    with pytest.raises(ValueError, match=r"subset_size=31 is larger than the 30 real samples"):
        kid_from_features(real, rng.normal(size=(40, 4)), subsets=2, subset_size=31)
    with pytest.raises(ValueError, match="at least 2 samples"):
        kid_from_features(real, fake, subset_size=1)
    with pytest.raises(ValueError, match="at least 2 samples"):
        kid_from_features(real, fake, subset_size=2.5)
    # a subset the size of the smaller set is fine, and uses every row of it
    mean, std = kid_from_features(real[:20], fake, subsets=3, subset_size=20)
    assert np.isfinite(mean) and std == pytest.approx(0.0, abs=1e-12)  # 20 of 20 rows: the same subset each time
