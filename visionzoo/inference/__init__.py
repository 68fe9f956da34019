"""The inference layer: what a notebook user's predictors need besides the models, kept below the tasks so
that predicting never imports training code, and the tasks' evaluation and reports reuse it.

    preprocess       the classifiers' evaluation transform (from a model card or explicit values)
    draw             detections, segmentation class colours, top-k captions on images
    crf              DenseCRF refinement of segmentation logits
    sliding_window   segmentation logits at any image size (one pass or overlapping tiles)
"""
