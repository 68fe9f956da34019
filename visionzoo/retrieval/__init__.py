"""Image retrieval: index a gallery with a model's features, query it, and score the rankings.

    from visionzoo.features import extract_features
    from visionzoo.retrieval import retrieval_metrics
    result = retrieval_metrics(query_feats, query_labels, gallery_feats, gallery_labels)
    result.metrics["mAP"], result.metrics["recall@1"], result.top_indices

`python evaluate.py TARGET --retrieval` runs it on a classifier's dataset splits (see runner.py).
"""
from visionzoo.retrieval.metrics import RetrievalResult, average_precision_sorted, retrieval_metrics

__all__ = ["RetrievalResult", "average_precision_sorted", "retrieval_metrics"]
