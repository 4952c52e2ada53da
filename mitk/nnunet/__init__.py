"""nnU-Net v2 model folders (``dataset.json``, ``plans.json``, ``fold_*/checkpoint_final.pth``) read safely.

:mod:`.folder` finds the model folder (a training output folder, or a dataset folder holding exactly one) and
reads its JSON files and its checkpoints, which are pickles, with ``torch.load(weights_only=True)`` and an
explicit allow-list of the types nnU-Net puts in them: nothing in them runs. :mod:`.architecture` builds the
network that ``plans.json`` describes from an allow-list of dynamic_network_architectures and torch.nn classes,
never from an import string. :mod:`.loading` turns a folder into the checkpoint of the ``nnunet`` plugin.
"""

from mitk.nnunet.folder import ModelFolder, is_model_folder, read_model_folder

__all__ = ["ModelFolder", "is_model_folder", "read_model_folder"]
