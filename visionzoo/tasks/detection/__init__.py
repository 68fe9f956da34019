"""Object detection and instance segmentation: datasets, losses, COCO/VOC metrics and report sections."""
from visionzoo.tasks import register_task
from visionzoo.tasks.detection.task import DetectionTask

register_task(DetectionTask)

__all__ = ["DetectionTask"]
