"""Semantic segmentation: datasets, losses, confusion-matrix metrics, CRF refinement and report sections."""
from visionzoo.tasks import register_task
from visionzoo.tasks.segmentation.task import SegmentationTask

register_task(SegmentationTask)

__all__ = ["SegmentationTask"]
