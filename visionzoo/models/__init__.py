"""Architecture files. Importing this package registers every model."""
from visionzoo.models import (  # noqa: F401
    alexnet,
    autoencoder,
    fast_rcnn,
    fcn,
    gan,
    lenet,
    rcnn,
    resnet,
    resnet_cifar,
    siamfc,
    sint,
    stn,
    vae,
    vgg,
)
