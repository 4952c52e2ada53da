"""MONAI bundles (Model Zoo folders) read safely: only the parts mitk needs, no code executed.

:mod:`.folder` reads a bundle folder (``configs/metadata.json``, ``configs/inference.json``, ``models/model.pt``);
:mod:`.resolver` builds the network, preprocessing and inferer from an allow-list of MONAI classes, with ``@``
references and a small subset of ``$`` expressions interpreted without ``eval``; :mod:`.loading` turns a bundle
into the checkpoint of the plugin registered for its output format. This package names no task: a bundle's task
is the task of the plugin registered as ``monai-bundle-<format>`` (``monai-bundle-segmentation`` …).
"""

from mitk.bundles.folder import Bundle, is_bundle, read_bundle

__all__ = ["Bundle", "is_bundle", "read_bundle"]
