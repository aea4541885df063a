"""Classifier backbones from timm: the study's Xception and the ones of its backbone comparison.

Each entry builds a timm model with a new final layer of ``num_classes`` outputs. ImageNet weights come
through timm (torch hub or the Hugging Face hub, both cached on disk) or from a local file; random
initialisation is only ever an explicit choice (``classifier.pretrained: false``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from srfp.errors import UserError


class BackboneWeightsError(UserError, RuntimeError):
    """ImageNet weights of a backbone are asked for but cannot be loaded."""


def _aligned_xception_blocks(widths: tuple[int, int, int, int], middle_blocks: int) -> list[dict]:
    """Block layout of timm's aligned Xception: entry flow, ``middle_blocks`` middle blocks, exit flow."""
    w1, w2, w3, w4 = widths
    return [dict(in_chs=64, out_chs=w1, stride=2), dict(in_chs=w1, out_chs=w2, stride=2),
            dict(in_chs=w2, out_chs=w3, stride=2),
            *[dict(in_chs=w3, out_chs=w3, stride=1)] * middle_blocks,
            dict(in_chs=w3, out_chs=(w3, w4, w4), stride=2),
            dict(in_chs=w4, out_chs=(w4 * 3 // 2, w4 * 3 // 2, w4 * 2), stride=1, no_skip=True, start_with_relu=False)]


@dataclass(frozen=True)
class Backbone:
    """A timm model name, the arguments that shape it, and whether ImageNet weights exist for it."""

    timm_name: str
    description: str
    kwargs: dict = field(default_factory=dict)
    has_imagenet_weights: bool = True


BACKBONES = {
    "xception": Backbone("legacy_xception", "the study's Xception (22.9M parameters, 2048 features)"),
    "xception_short": Backbone(
        "xception41", "aligned Xception with 2 instead of 8 middle blocks (2048 features)",
        dict(block_cfg=_aligned_xception_blocks((128, 256, 728, 1024), 2)), has_imagenet_weights=False),
    "xception_narrow": Backbone(
        "xception41", "aligned Xception, 2 middle blocks, a quarter of the width (512 features)",
        dict(block_cfg=_aligned_xception_blocks((32, 64, 182, 256), 2)), has_imagenet_weights=False),
    "mobilenet": Backbone("mobilenetv3_large_100", "MobileNetV3-Large (1280 features)"),
    "resnet18": Backbone("resnet18", "ResNet-18 (512 features)"),
    "resnet50": Backbone("resnet50", "ResNet-50 (2048 features)"),
}


def create_backbone(name: str, num_classes: int, pretrained: bool, weights_file: str = ""):
    """A timm classifier with a new ``num_classes``-way final layer, ImageNet-initialised when ``pretrained``."""
    import timm

    backbone = BACKBONES[name]
    if pretrained and not backbone.has_imagenet_weights:
        raise BackboneWeightsError(f"backbone {name} ({backbone.description}) has no ImageNet weights; "
                                   "set classifier.pretrained: false to train it from random initialisation")
    overlay = dict(file=weights_file) if weights_file else None
    try:
        return timm.create_model(backbone.timm_name, pretrained=pretrained, num_classes=num_classes,
                                 pretrained_cfg_overlay=overlay, **backbone.kwargs)
    except Exception as error:  # timm raises whatever the hub or the file loader raised
        if not pretrained:
            raise
        raise BackboneWeightsError(_weights_help(name, backbone, weights_file, error)) from error


def _weights_help(name: str, backbone: Backbone, weights_file: str, error: Exception) -> str:
    import timm

    config = timm.models.get_pretrained_cfg(backbone.timm_name)
    if weights_file:
        where = f"the file {weights_file} (classifier.weights) could not be loaded"
    elif config and config.url:
        where = (f"download it from {config.url} into $TORCH_HOME/hub/checkpoints/ (default "
                 "~/.cache/torch/hub/checkpoints/), or set classifier.weights to a local copy")
    else:
        hub_id = config.hf_hub_id if config else backbone.timm_name
        where = (f"let timm fetch it from the Hugging Face hub ({hub_id}) into $HF_HOME once, "
                 "or set classifier.weights to a local copy")
    return (f"ImageNet weights of backbone {name} ({backbone.timm_name}) are not available "
            f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}); {where}; "
            "or set classifier.pretrained: false to train from random initialisation")


def normalization(model) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The mean and std the backbone's pretrained configuration expects (0.5/0.5 for the Xceptions)."""
    config = model.pretrained_cfg
    return tuple(config["mean"]), tuple(config["std"])
