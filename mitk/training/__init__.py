"""The one training engine: datalists (:mod:`.data`), the loop (:mod:`.loop`), what a task brings
(:mod:`.recipe`; each task's own recipe is ``mitk.tasks.<task>.recipe``), its epoch log (:mod:`.log`), the run
folder (:mod:`.folder`) and torchrun (:mod:`.distributed`); :func:`mitk.training.train.train` is the entry point.

Import the submodules directly; this package itself stays free of torch and monai imports.
"""
