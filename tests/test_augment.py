"""Augmentation settings (:mod:`mitk.training.augment`): they reach the transform chain of the segmentation and
classification plugins, a disabled augmentation leaves the training input unchanged, per-modality defaults."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mitk.errors import PluginError
from mitk.training.augment import AUGMENTATION_DEFAULTS, AUGMENTATION_HELP, intensity_steps, spatial_steps

PROBABILITIES = ("flip", "rotate", "zoom", "elastic", "intensity", "gamma", "noise", "bias_field", "gibbs", "spike",
                 "motion", "ghosting")
OFF = {**dict.fromkeys(PROBABILITIES, 0.0), "rotate90": 0.0}


def _names(transform) -> list[str]:
    return [type(step).__name__ for step in transform.transforms]


def _segmenter(**settings):
    from mitk_builtin._segment_networks import UNetSegmenter

    plugin = UNetSegmenter()
    return plugin, plugin.resolve_config({"patch_size": [32, 32, 32], "spacing": [4.0, 4.0, 4.0],
                                          "network": {"channels": [4, 8, 16], "strides": [2, 2]}, **settings})


def _classifier(**settings):
    from mitk_builtin._classify_networks import DenseNet121Classifier

    plugin = DenseNet121Classifier()
    return plugin, plugin.resolve_config({"class_names": ["a", "b"], "spatial_dims": 2, "image_size": [32, 32],
                                          **settings})


def test_every_setting_is_documented_and_every_probability_is_known():
    assert set(AUGMENTATION_HELP) == set(AUGMENTATION_DEFAULTS)
    assert set(PROBABILITIES) <= set(AUGMENTATION_DEFAULTS)


def test_settings_reach_the_segmentation_chain():
    plugin, config = _segmenter(augmentation={"gamma": 1.0, "gamma_range": [2.0, 2.0], "rotate": 0.4,
                                              "zoom": 0.3, "gibbs": 0.2, "flip_axes": [2]})
    chain = plugin.training_transforms(config)
    names = _names(chain)
    assert names.count("RandFlipd") == 1 and "RandRotated" in names and "RandZoomd" in names
    gamma = next(step for step in chain.transforms if type(step).__name__ == "RandAdjustContrastd")
    assert gamma.adjuster.prob == 1.0 and tuple(gamma.adjuster.gamma) == (2.0, 2.0)
    flip = next(step for step in chain.transforms if type(step).__name__ == "RandFlipd")
    assert flip.flipper.spatial_axis == 2
    assert "RandGibbsNoised" in names
    with pytest.raises(PluginError, match=r"augmentation\.gamma"):
        plugin.training_transforms(_segmenter(augmentation={"gamma": 2.0})[1])


def test_bias_field_follows_the_modality():
    from mitk.training.planning import Budget, make_plan

    fingerprint = {"spacings": [[2.0, 2.0, 2.0]] * 3, "shapes_after_crop": [[40, 40, 40]] * 3, "cases": 3}
    budget = Budget("cpu", 4.0, 50.0)
    mr_plan = make_plan({**fingerprint, "intensity": [{"modality": "MR"}]}, "unet", budget)
    ct_plan = make_plan({**fingerprint, "intensity": [{"modality": "CT", "mean": 40.0, "std": 50.0,
                                                       "percentile_00_5": -100.0, "percentile_99_5": 200.0}]},
                        "unet", budget)
    assert mr_plan["settings"]["augmentation"] == {"bias_field": 0.3}
    assert ct_plan["settings"]["augmentation"] == {"bias_field": 0.0}
    mr_plugin, mr = _segmenter(**mr_plan["settings"])
    ct_plugin, ct = _segmenter(**ct_plan["settings"])
    assert "RandBiasFieldd" in _names(mr_plugin.training_transforms(mr))
    assert "RandBiasFieldd" not in _names(ct_plugin.training_transforms(ct))
    auto_plugin, auto = _segmenter(augmentation={"bias_field": "auto"})  # "auto" reads intensity.mode
    assert "RandBiasFieldd" in _names(auto_plugin.training_transforms(auto))
    assert "RandBiasFieldd" not in _names(_segmenter()[0].training_transforms(_segmenter()[1]))  # default off
    plugin, classify = _classifier()
    assert "RandBiasFieldd" not in _names(plugin.training_transforms(classify))
    assert "RandBiasFieldd" in _names(plugin.training_transforms(_classifier(augmentation={"bias_field": 0.5})[1]))


def test_disabled_augmentation_leaves_the_training_input_unchanged(brain_mr, brain_mr_label):
    from mitk.training.data import LoadCased

    assert spatial_steps(OFF, keys=("image",), modes=("bilinear",), dims=3, flip_axes=(0, 1, 2)) == []
    assert intensity_steps(OFF, modality="MR") == []
    plugin, config = _segmenter(augmentation=OFF, patch_size=[32, 32, 8], positive=1.0, negative=0.0,
                                samples_per_case=1, spacing="keep")
    case = LoadCased(num_labels=2, in_channels=1)({"image": str(brain_mr), "label": str(brain_mr_label)})
    reference = plugin.validation_transforms(config)(dict(case))["image"]
    # the whole preprocessed volume: crop windows of the volume's own size (patch = its shape)
    config["patch_size"] = [int(side) for side in reference.shape[1:]]
    config["network"]["strides"] = [1, 1]
    for seed in range(3):
        chain = plugin.training_transforms(config)
        chain.set_random_state(seed)
        patch = chain(dict(case))[0]["image"]
        torch.testing.assert_close(torch.as_tensor(patch), torch.as_tensor(reference))


def test_classifier_chain_and_two_d_flips():
    plugin, config = _classifier()
    assert "RandFlipd" not in _names(plugin.training_transforms(config))  # never flips a radiograph by default
    plugin, config = _classifier(augmentation={"flip": 0.5, "noise": 0.0})
    flips = [step for step in plugin.training_transforms(config).transforms if type(step).__name__ == "RandFlipd"]
    assert [flip.flipper.spatial_axis for flip in flips] == [0]
    names = _names(plugin.training_transforms(_classifier(augmentation={"gamma": 0.3, "elastic": 0.2})[1]))
    assert "RandAdjustContrastd" in names and "Rand2DElasticd" in names


@pytest.mark.parametrize("artefact", ["motion", "ghosting"])
def test_torchio_artefacts_change_the_image_and_keep_its_metadata(artefact, brain_mr):
    from monai.data import MetaTensor

    from mitk.io.reader import load_image

    image = load_image(brain_mr)
    array = np.asarray(image.array, dtype=np.float32)[None, ::2, ::2, :]
    tensor = MetaTensor(torch.as_tensor(array), affine=torch.as_tensor(image.affine))
    (step,) = intensity_steps({**OFF, artefact: 1.0})
    torch.manual_seed(0)
    changed = step({"image": tensor})["image"]
    assert isinstance(changed, MetaTensor) and changed.shape == tensor.shape
    torch.testing.assert_close(changed.affine, tensor.affine)
    assert float((changed - tensor).abs().mean()) > 1e-3 * float(tensor.abs().mean())
