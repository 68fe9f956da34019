"""Architecture files. Importing this package registers every model."""
from visionzoo.models import (  # noqa: F401
    alexnet,
    autoencoder,
    fast_rcnn,
    fcn,
    gan,
    rcnn,
    resnet,
    siamfc,
    sint,
    stn,
    vae,
    vgg,
)
