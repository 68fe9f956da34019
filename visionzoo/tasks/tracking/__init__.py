"""Single-object tracking: training pairs, SiamFC / SINT losses, OTB and GOT-10k metrics, report sections."""
from visionzoo.tasks import register_task
from visionzoo.tasks.tracking.task import TrackingTask

register_task(TrackingTask)

__all__ = ["TrackingTask"]
