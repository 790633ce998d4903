"""3D U-Net (MONAI's residual UNet): the default model's architecture and a baseline."""

from __future__ import annotations

from monai.networks.nets import UNet

from .registry import SplitHeads, register_architecture


@register_architecture("unet3d", "3D U-Net with residual units (MONAI UNet)")
def build_unet3d(in_channels: int, num_classes: int, num_lesion_classes: int,
                 channels=(16, 32, 64, 128, 192), num_res_units: int = 1, norm: str = "instance",
                 dropout: float = 0.0):
    channels = tuple(channels)
    backbone = UNet(
        spatial_dims=3,
        in_channels=in_channels,
        out_channels=num_classes + num_lesion_classes,
        channels=channels,
        strides=(2,) * (len(channels) - 1),
        num_res_units=num_res_units,
        norm=norm,
        dropout=dropout,
    )
    return SplitHeads(backbone, num_classes, num_lesion_classes, size_divisor=2 ** (len(channels) - 1))
