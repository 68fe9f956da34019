"""Retrieval metrics against a hand-computed example, sklearn (when installed) and a brute-force reference;
evaluate.py --retrieval end to end on real image files."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from tests.helpers import ROOT, run_script
from visionzoo.retrieval import average_precision_sorted, retrieval_metrics


def _scores_as_features(scores):
    """Queries whose inner products with one-hot gallery features are exactly `scores`."""
    scores = torch.tensor(scores, dtype=torch.float32)
    return scores, torch.eye(scores.shape[1])


def test_hand_computed_example():
    q, g = _scores_as_features([[0.9, 0.8, 0.7, 0.6, 0.5],
                                [0.9, 0.1, 0.5, 0.3, 0.2],
                                [0.1, 0.2, 0.3, 0.4, 0.5]])
    gallery_labels = [0, 1, 0, 1, 1]
    r = retrieval_metrics(q, [0, 1, 2], g, gallery_labels, class_names=["a", "b", "c"])
    # query 0: relevant at ranks 1 and 3 -> AP = (1/1 + 2/3) / 2
    # query 1: ranking g0 g2 g3 g4 g1 -> relevant at ranks 3, 4, 5 -> AP = (1/3 + 2/4 + 3/5) / 3
    # query 2: class "c" has no gallery item -> no AP, left out of every mean
    ap0, ap1 = (1 + 2 / 3) / 2, (1 / 3 + 2 / 4 + 3 / 5) / 3
    np.testing.assert_allclose(r.average_precision[:2], [ap0, ap1])
    assert np.isnan(r.average_precision[2])
    m = r.metrics
    assert m["mAP"] == pytest.approx((ap0 + ap1) / 2)
    assert (m["recall@1"], m["recall@5"], m["recall@10"]) == (0.5, 1.0, 1.0)
    assert m["precision@1"] == 0.5 and m["precision@5"] == pytest.approx((2 / 5 + 3 / 5) / 2)
    assert m["precision@10"] == m["precision@5"]  # k is capped at the gallery size (5)
    assert (m["num_queries"], m["num_queries_scored"], m["queries_without_relevant"], m["gallery_size"]) == (3, 2, 1, 5)
    assert r.top_indices[1].tolist() == [0, 2, 3, 4, 1] and r.first_relevant_rank.tolist() == [0, 2, -1]
    np.testing.assert_allclose(r.top_scores[1], [0.9, 0.5, 0.3, 0.2, 0.1])
    assert m["per_class"] == {"a": {"AP": pytest.approx(ap0), "recall@1": 1.0, "queries": 1},
                              "b": {"AP": pytest.approx(ap1), "recall@1": 0.0, "queries": 1}}
    assert r.recall_at([1, 2, 3]) == [0.5, 0.5, 1.0]


def test_tied_scores_form_one_threshold():
    scores = torch.tensor([[0.5, 0.5, 0.2], [0.5, 0.5, 0.2], [0.9, 0.5, 0.5]])
    relevant = torch.tensor([[False, True, False], [True, False, False], [True, False, True]])
    # rows 1-2: the relevant item shares the top score with an irrelevant one: precision 1/2 either way;
    # row 3: ranks 1 (P = 1) and a tie at ranks 2-3 (P = 2/3 at its end)
    torch.testing.assert_close(average_precision_sorted(scores, relevant),
                               torch.tensor([0.5, 0.5, (1 + 2 / 3) / 2], dtype=torch.float64))


def _brute_force(q, q_labels, g, g_labels, ks, exclude_self=False):
    """Per query in pure Python: rank by (-score, index); AP as sum over distinct thresholds of
    (recall gain) x precision, the definition sklearn documents."""
    aps, recalls, precisions = [], {k: [] for k in ks}, {k: [] for k in ks}
    s = (q.double() @ g.double().T).numpy()
    for i in range(len(q)):
        items = [j for j in range(len(g)) if not (exclude_self and j == i)]
        rel = {j: int(g_labels[j] == q_labels[i]) for j in items}
        n_rel = sum(rel.values())
        if n_rel == 0:
            continue
        ap, seen, hits = 0.0, 0, 0
        for t in sorted({s[i, j] for j in items}, reverse=True):
            group = [j for j in items if s[i, j] == t]
            seen += len(group)
            new_hits = sum(rel[j] for j in group)
            hits += new_hits
            ap += new_hits / n_rel * hits / seen
        aps.append(ap)
        ranked = sorted(items, key=lambda j: (-s[i, j], j))
        for k in ks:
            top = [rel[j] for j in ranked[:k]]
            recalls[k].append(float(any(top)))
            precisions[k].append(sum(top) / min(k, len(items)))
    return aps, {k: np.mean(v) for k, v in recalls.items()}, {k: np.mean(v) for k, v in precisions.items()}


@pytest.mark.parametrize("quantise", [False, True])
def test_against_references(quantise):
    gen = torch.Generator().manual_seed(0)
    q, g = torch.randn(30, 6, generator=gen), torch.randn(90, 6, generator=gen)
    q_labels, g_labels = torch.randint(0, 4, (30,), generator=gen), torch.randint(0, 5, (90,), generator=gen)
    g[g_labels == 1] += 1.0  # some structure, so the metrics are not all near chance
    q[q_labels == 1] += 1.0
    if quantise:  # coarse values: many tied similarities
        q, g = q.round(), g.round()
    r = retrieval_metrics(q.double(), q_labels, g.double(), g_labels, ks=(1, 3, 10))
    aps, recall, precision = _brute_force(q, q_labels, g, g_labels, (1, 3, 10))
    scored = ~np.isnan(r.average_precision)
    assert scored.sum() == len(aps) == len(q)
    np.testing.assert_allclose(r.average_precision[scored], aps, rtol=1e-6, atol=1e-9)
    assert r.metrics["mAP"] == pytest.approx(np.mean(aps))
    for k in (1, 3, 10):
        assert r.metrics[f"recall@{k}"] == pytest.approx(recall[k])
        assert r.metrics[f"precision@{k}"] == pytest.approx(precision[k])
    if quantise:
        assert len(np.unique((q @ g.T).numpy())) < q.shape[0] * g.shape[0] / 10  # ties did occur
    try:
        from sklearn.metrics import average_precision_score
    except ImportError:
        return
    s = (q.double() @ g.double().T).numpy()
    for i in np.flatnonzero(scored):
        expected = average_precision_score((g_labels == q_labels[i]).numpy(), s[i])
        assert r.average_precision[i] == pytest.approx(expected, rel=1e-6)


def test_blocks_and_leave_one_out():
    gen = torch.Generator().manual_seed(3)
    feats = torch.nn.functional.normalize(torch.randn(25, 4, generator=gen), dim=1)
    labels = torch.randint(0, 3, (25,), generator=gen)
    whole = retrieval_metrics(feats, labels, feats, labels, exclude_self=True, top=24)
    for block_elements in (1, 30, 200):  # 1, 1 and 8 queries per block
        part = retrieval_metrics(feats, labels, feats, labels, exclude_self=True, top=24, block_elements=block_elements)
        assert part.metrics == whole.metrics
        np.testing.assert_array_equal(part.top_indices, whole.top_indices)
        np.testing.assert_allclose(part.average_precision, whole.average_precision)
    assert whole.top_indices.shape == (25, 24)
    assert all(i not in row for i, row in enumerate(whole.top_indices.tolist()))  # never itself
    aps, recall, _ = _brute_force(feats, labels, feats, labels, (1, 5), exclude_self=True)
    assert whole.metrics["mAP"] == pytest.approx(np.mean(aps)) and whole.metrics["recall@1"] == pytest.approx(recall[1])
    assert whole.metrics["gallery_size"] == 25 and whole.metrics["exclude_self"]
    # without leave-one-out every query finds itself first
    assert retrieval_metrics(feats, labels, feats, labels).metrics["recall@1"] == 1.0


def test_bad_inputs():
    f, labels = torch.randn(4, 3), torch.tensor([0, 1, 0, 1])
    with pytest.raises(ValueError, match="3-d but gallery features 2-d"):
        retrieval_metrics(f, labels, torch.randn(4, 2), labels)
    with pytest.raises(ValueError, match=r"query labels must be \(N,\) = \(4,\)"):
        retrieval_metrics(f, labels[:3], f, labels)
    with pytest.raises(ValueError, match="gallery features contain NaN"):
        retrieval_metrics(f, labels, torch.full((4, 3), float("nan")), labels)
    with pytest.raises(ValueError, match="exclude_self needs the same items"):
        retrieval_metrics(f, labels, f[:3], labels[:3], exclude_self=True)
    with pytest.raises(ValueError, match="ks must be positive"):
        retrieval_metrics(f, labels, f, labels, ks=(0, 5))


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    from visionzoo.datasets.write_shapes import write_image_folder

    root = tmp_path_factory.mktemp("shapes_retrieval")
    write_image_folder(root, image_size=32, counts={"train": 30, "val": 5, "test": 12}, seed=0, progress=False)
    return root


@pytest.mark.slow
def test_evaluate_retrieval_end_to_end(tmp_path, tiny_folder, one_thread):
    weights = ROOT / "weights" / "resnet18.shapes.safetensors"
    out = tmp_path / "report"
    proc = run_script("evaluate.py", weights, "--retrieval", "--data", tiny_folder, "--report", out, "--workers", "0",
                      "--no-progress", env={"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    printed = json.loads(proc.stdout.splitlines()[0])
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["mode"] == "retrieval" and (metrics["split"], metrics["gallery_split"]) == ("test", "train")
    assert (metrics["num_samples"], metrics["gallery_size"]) == (12, 30)
    assert metrics["features"]["layer"] == "flatten" and metrics["features"]["dim"] == 512
    s = metrics["scalars"]
    assert set(s) == {"mAP", "recall@1", "recall@5", "recall@10", "precision@1", "precision@5", "precision@10"}
    assert printed == {"split": "test", "gallery_split": "train", **s}
    assert 0 < s["recall@1"] <= s["recall@5"] <= s["recall@10"] <= 1 and 0 < s["mAP"] <= 1

    # the same numbers from the notebook API on the same files
    from visionzoo.datasets.folder import ImageFolderDataset
    from visionzoo.features import extract_features

    classes = ["circle", "hexagon", "square", "star", "triangle"]  # fixed: a tiny split may lack a class

    def files(split):
        ds = ImageFolderDataset(tiny_folder / split, classes=classes)
        return [p for p, _ in ds.samples], torch.tensor(ds.targets)

    (g_paths, g_labels), (q_paths, q_labels) = files("train"), files("test")
    g = extract_features("resnet18", g_paths, weights="shapes", progress=False)
    q = extract_features("resnet18", q_paths, weights="shapes", progress=False)
    local = retrieval_metrics(q, q_labels, g, g_labels).metrics
    for key, value in s.items():
        assert local[key] == pytest.approx(value, abs=1e-6), key

    html = (out / "report.html").read_text()
    assert "Query results" in html and "lowest AP" in html and 'src="http' not in html
    assert len(re.findall(r"<figcaption>query: ", html)) == 10 + 6  # spread queries + hardest queries
    assert len(re.findall(r"<figcaption>#\d+ ", html)) == 16 * 8


@pytest.mark.slow
def test_evaluate_retrieval_errors(tiny_folder):
    weights = ROOT / "weights" / "resnet18.shapes.safetensors"
    proc = run_script("evaluate.py", weights, "--retrieval", "--data", tiny_folder, "--layer", "layr3",
                      "--gallery-split", "val", "--workers", "0", "--no-progress", env={"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 1 and "error: layer 'layr3' is not a node of resnet18" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = run_script("evaluate.py", weights, "--retrieval", "--data", tiny_folder, "--gallery-split", "nope",
                      "--no-progress", env={"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 1 and f"{tiny_folder / 'nope'} not found" in proc.stderr
