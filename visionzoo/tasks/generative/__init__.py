"""Generative family: autoencoders, denoising autoencoders, VAEs and GANs (models in visionzoo/models/
autoencoder.py, vae.py, gan.py), with honest likelihoods and FID/KID through a named feature extractor."""
from visionzoo.tasks import register_task
from visionzoo.tasks.generative.task import GenerativeTask

register_task(GenerativeTask)

__all__ = ["GenerativeTask"]
