"""SiamFC: fully-convolutional Siamese networks for object tracking (Bertinetto et al., ECCVW 2016).

`siamfc_alexnet` is the paper's network: an AlexNet-like embedding without padding (total stride 8)
applied to a 127-px exemplar (-> 6x6x256) and a 255-px search image (-> 22x22x256), and a head that
cross-correlates the exemplar's features over the search features (-> 17x17 response), scaled by 1e-3
with a learned bias (the paper's "adjust" layer: the 1e-3 keeps the initial logits in the logistic
loss's linear range).

The model is a plain `nn.Module`: `model(exemplar, search)` gives the response map; `model.embed`
and `model.correlate` are the two halves the tracker calls separately (the exemplar is embedded once
at init). Inputs are normalised RGB tensors (the mean/std of the weights' model card). The tracker
itself (crops, scale search, cosine window) lives in `visionzoo.tracking.siamfc`.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from visionzoo.registry import Capabilities, register_model

EXEMPLAR_SIZE, SEARCH_SIZE, TOTAL_STRIDE = 127, 255, 8


def _conv_bn_relu(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, relu: bool = True) -> list[nn.Module]:
    layers = [nn.Conv2d(cin, cout, k, stride=stride, groups=groups), nn.BatchNorm2d(cout, eps=1e-6, momentum=0.05)]
    return layers + [nn.ReLU(inplace=True)] if relu else layers


class AlexNetEmbedding(nn.Sequential):
    """SiamFC's AlexNet-like embedding (REFERENCE.md): no padding, so features are translation-equivariant
    up to the stride; conv2/4/5 keep AlexNet's two groups. conv5 has no BatchNorm or ReLU (its output is
    correlated directly, as in the authors' network)."""

    total_stride = TOTAL_STRIDE

    def __init__(self, width: float = 1.0):
        c = [max(8, int(round(n * width / 2)) * 2) for n in (96, 256, 384, 384, 256)]  # even: two groups
        super().__init__(
            *_conv_bn_relu(3, c[0], 11, stride=2), nn.MaxPool2d(3, 2),
            *_conv_bn_relu(c[0], c[1], 5, groups=2), nn.MaxPool2d(3, 2),
            *_conv_bn_relu(c[1], c[2], 3),
            *_conv_bn_relu(c[2], c[3], 3, groups=2),
            nn.Conv2d(c[3], c[4], 3, groups=2),
        )
        self.out_channels = c[4]


def cross_correlate(exemplar: torch.Tensor, search: torch.Tensor) -> torch.Tensor:
    """Each exemplar feature map (B, C, h, w) slid over its own search map (B, C, H, W) -> (B, 1, H-h+1, W-w+1).
    One grouped convolution over the batch (the usual trick): no Python loop. A single exemplar (1, C, h, w)
    is shared by every search map (the tracker's scale pyramid)."""
    b, c, hh, ww = search.shape
    if exemplar.shape[0] == 1 and b > 1:
        return F.conv2d(search, exemplar)
    if exemplar.shape[0] != b:
        raise ValueError(f"cross_correlate: {exemplar.shape[0]} exemplars for {b} search images")
    out = F.conv2d(search.reshape(1, b * c, hh, ww), exemplar, groups=b)
    return out.reshape(b, 1, *out.shape[-2:])


class SiamFC(nn.Module):
    """Siamese embedding + cross-correlation head: response = out_scale * (phi(z) * phi(x)) + bias."""

    def __init__(self, backbone: nn.Module, out_scale: float = 1e-3):
        super().__init__()
        self.backbone = backbone
        self.out_scale = out_scale
        self.bias = nn.Parameter(torch.zeros(1))
        self.total_stride = backbone.total_stride
        _init_weights(self)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone(images)

    def correlate(self, exemplar_features: torch.Tensor, search_features: torch.Tensor) -> torch.Tensor:
        return cross_correlate(exemplar_features, search_features) * self.out_scale + self.bias

    def forward(self, exemplar: torch.Tensor, search: torch.Tensor) -> torch.Tensor:
        return self.correlate(self.embed(exemplar), self.embed(search))


def _init_weights(model: nn.Module) -> None:
    # Kaiming (fan-out) convolutions and unit BatchNorm, as the public SiamFC training code does.
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


@register_model(task="tracking", family="siamfc", input_size=(3, SEARCH_SIZE, SEARCH_SIZE), num_classes=None,
                exemplar_size=EXEMPLAR_SIZE, search_size=SEARCH_SIZE, response_size=17,
                capabilities=Capabilities(tracker_kind="siamfc"))
def siamfc_alexnet(width: float = 1.0, out_scale: float = 1e-3):
    """SiamFC with the paper's AlexNet-like embedding: 127/255 crops, 17x17 response (2.33M parameters).
    `width` scales every layer's channels (1.0 = the paper; smaller for quick tests)."""
    return SiamFC(AlexNetEmbedding(width), out_scale)


# siamfc-pytorch (github.com/huanglianghua/siamfc-pytorch) names its AlexNetV1 blocks conv1..conv5, each an
# nn.Sequential of (Conv2d, BatchNorm2d, ...); conv5 is the convolution alone. Its head has no parameters (the
# response is 0.001 x the cross-correlation, no bias). Our embedding is one nn.Sequential: the same layers,
# indexed through the ReLU and max-pool modules.
SIAMFC_PYTORCH_LAYERS = {"backbone.conv1.0": "backbone.0", "backbone.conv1.1": "backbone.1",
                         "backbone.conv2.0": "backbone.4", "backbone.conv2.1": "backbone.5",
                         "backbone.conv3.0": "backbone.8", "backbone.conv3.1": "backbone.9",
                         "backbone.conv4.0": "backbone.11", "backbone.conv4.1": "backbone.12",
                         "backbone.conv5.0": "backbone.14"}


def siamfc_pytorch_state_dict(state: Mapping[str, torch.Tensor], source: str = "the checkpoint") -> dict:
    """A siamfc-pytorch `Net` state dict (keys backbone.convN.{0,1}.*) renamed to `siamfc_alexnet`'s keys,
    with the head bias set to 0 (that project's head has none). A missing or unknown key is an error naming
    the keys and `source`."""
    renamed, unknown = {}, []
    for key, value in state.items():
        layer, _, leaf = key.rpartition(".")
        if layer in SIAMFC_PYTORCH_LAYERS and isinstance(value, torch.Tensor):
            renamed[f"{SIAMFC_PYTORCH_LAYERS[layer]}.{leaf}"] = value
        else:
            unknown.append(key)
    reference = siamfc_alexnet().state_dict()
    missing = sorted(k for k in reference if k not in renamed and k != "bias")
    unknown += sorted(k for k in renamed if k not in reference)
    if missing or unknown:
        inverse = {v: k for k, v in SIAMFC_PYTORCH_LAYERS.items()}
        theirs = sorted(f"{inverse[k.rpartition('.')[0]]}.{k.rpartition('.')[2]}" for k in missing)
        raise ValueError(f"{source} is not a siamfc-pytorch AlexNetV1 state dict: "
                         + (f"missing {theirs[:6]}{' ...' if len(theirs) > 6 else ''}" if theirs else "")
                         + ("; " if theirs and unknown else "")
                         + (f"unexpected {unknown[:6]}{' ...' if len(unknown) > 6 else ''}" if unknown else ""))
    for key, value in renamed.items():
        if tuple(value.shape) != tuple(reference[key].shape):
            inverse = {v: k for k, v in SIAMFC_PYTORCH_LAYERS.items()}
            theirs = f"{inverse[key.rpartition('.')[0]]}.{key.rpartition('.')[2]}"
            raise ValueError(f"{source}: {theirs} has shape {tuple(value.shape)}, siamfc_alexnet expects "
                             f"{tuple(reference[key].shape)}")
    renamed["bias"] = torch.zeros(1)
    return renamed


def load_siamfc_pytorch(path: str | Path) -> SiamFC:
    """`siamfc_alexnet` with the weights of a siamfc-pytorch checkpoint (e.g. its `siamfc_alexnet_e50.pth`: a
    plain state dict saved with torch.save). Read with torch.load(weights_only=True): nothing is unpickled
    beyond tensors. The model expects that project's input: raw 0-255 RGB crops, not normalised."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"siamfc-pytorch checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a pickle with code in it, a truncated file, not a torch file at all
        raise ValueError(f"{path} cannot be read as a plain state dict of tensors (torch.load with "
                         f"weights_only=True): {str(e).splitlines()[0]}") from None
    if not isinstance(state, Mapping):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a state dict (a mapping of names to tensors)")
    model = siamfc_alexnet()
    model.load_state_dict(siamfc_pytorch_state_dict(state, str(path)))  # copy_ casts e.g. fp16 to the model dtype
    return model.eval()
