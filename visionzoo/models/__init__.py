"""Architecture files. Importing this package registers every model."""
from visionzoo.models import alexnet, rcnn, resnet, vgg  # noqa: F401
