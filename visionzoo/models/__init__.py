"""Architecture files. Importing this package registers every model."""
from visionzoo.models import alexnet, resnet, vgg  # noqa: F401
