"""Image classification: datasets, loss, metrics and report sections in one package."""
from visionzoo.tasks import register_task
from visionzoo.tasks.classification.task import ClassificationTask

register_task(ClassificationTask)

__all__ = ["ClassificationTask"]
