"""Architecture files. Importing this package registers every model."""
from visionzoo.models import alexnet, fast_rcnn, fcn, rcnn, resnet, siamfc, sint, vgg  # noqa: F401
