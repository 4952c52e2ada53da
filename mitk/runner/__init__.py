"""The runner: load → plugin preprocessing → network/inferer → post-processing → input geometry → write.

``mitk.runner.batch`` is light (no torch); the task runners import torch and monai when used.
"""
