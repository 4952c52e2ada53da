"""Training: datalists (:mod:`.data`), the one training loop (:mod:`.loop`), its epoch log (:mod:`.log`)
and the per-task strategies (:mod:`.segment`).

Import the submodules directly; this package itself stays free of torch and monai imports.
"""
