"""``voxelmorph``: learned deformable registration with MONAI's VoxelMorph (a UNet, then scaling and squaring).

Trained by ``mitk train register --plugin voxelmorph --data pairs.json``; applied with ``mitk register
--plugin voxelmorph --weights best.safetensors``. The runner samples the moving image onto the fixed grid,
both pass through the same transforms onto the network grid, and the predicted displacement is brought back
to the fixed grid in millimetres.
"""

from __future__ import annotations

from typing import Any

import torch

from mitk.tasks import RegistrationPlugin, Transform


def _transforms(keys: tuple[str, ...], label_keys: tuple[str, ...], config: dict[str, Any]) -> Transform:
    from monai.transforms import (
        Compose,
        Orientationd,
        ResizeWithPadOrCropd,
        ScaleIntensityRangePercentilesd,
        Spacingd,
    )

    every = keys + label_keys
    modes = ["bilinear"] * len(keys) + ["nearest"] * len(label_keys)
    return Compose([
        Orientationd(keys=every, axcodes="RAS"),
        Spacingd(keys=every, pixdim=tuple(float(s) for s in config["spacing"]), mode=modes),
        ScaleIntensityRangePercentilesd(keys=keys, lower=0.5, upper=99.5, b_min=0.0, b_max=1.0, clip=True),
        ResizeWithPadOrCropd(keys=every, spatial_size=tuple(int(n) for n in config["patch_size"])),
    ])


class VoxelMorphRegistration(RegistrationPlugin):
    """MONAI VoxelMorph: a UNet on [moving, fixed] predicting a velocity field, integrated to a displacement."""

    cpu_kernels = False

    def default_config(self) -> dict[str, Any]:
        return {"spacing": [2.0, 2.0, 2.0], "patch_size": [96, 112, 96],
                "network": {"channels": [16, 32, 32, 32, 32, 32], "final_conv_channels": [16, 16],
                            "integration_steps": 7},
                "loss": {"similarity": "lncc", "lncc_kernel": 5, "regularisation": 1.0, "dice": 1.0},
                "labels": None, "optimizer": {"lr": 1e-3}}

    def settings_help(self) -> dict[str, str]:
        return {
            "spacing": "network grid spacing in mm (both images are resampled to it)",
            "patch_size": "network grid shape in voxels (centre crop or pad; multiples of 16)",
            "network.channels": "UNet channels per level (encoder then decoder, MONAI VoxelMorphUNet)",
            "network.final_conv_channels": "channels of the convolutions after the UNet",
            "network.integration_steps": "scaling-and-squaring steps (0: a plain, non-diffeomorphic field)",
            "loss.similarity": "lncc (local normalised cross-correlation) or mse",
            "loss.lncc_kernel": "LNCC window in voxels",
            "loss.regularisation": "weight of the bending energy of the field",
            "loss.dice": "weight of the Dice term on warped label maps (pairs with labels only)",
            "labels": "label value → name of the training label maps (found from the data)",
        }

    def settings_schema(self) -> dict[str, tuple[type | None, ...]]:
        return {"labels": (dict, None)}

    def network(self, config: dict[str, Any]) -> torch.nn.Module:
        from monai.networks.nets import VoxelMorph, VoxelMorphUNet

        network = config["network"]
        backbone = VoxelMorphUNet(spatial_dims=3, in_channels=2, unet_out_channels=3,
                                  channels=tuple(int(c) for c in network["channels"]),
                                  final_conv_channels=tuple(int(c) for c in network["final_conv_channels"]))
        return VoxelMorph(backbone=backbone, integration_steps=int(network["integration_steps"]))

    def inference_transforms(self, config: dict[str, Any]) -> Transform:
        return _transforms(("image",), (), config)

    def training_transforms(self, config: dict[str, Any]) -> Transform:
        labels = ("fixed_label", "moving_label") if config.get("labels") else ()
        return _transforms(("fixed", "moving"), labels, config)

    def predict_displacement(self, network: torch.nn.Module, fixed: torch.Tensor, moving: torch.Tensor,
                             config: dict[str, Any]) -> torch.Tensor:
        _, displacement = network(moving, fixed)
        return displacement
