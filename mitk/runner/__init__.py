"""The runner machinery every task's runner uses: loading a model (:mod:`.model`), tensors (:mod:`.tensors`),
geometry back onto the input grid (:mod:`.geometry`), resampling (:mod:`.resample`), output names
(:mod:`.outputs`), batch records (:mod:`.batch`), shards (:mod:`.shards`) and CPU kernels (:mod:`.cpu_kernels`).

The task runners themselves live in the tasks (``mitk.tasks.<task>.runner``). ``mitk.runner.batch`` is light (no
torch); the modules that need torch import it when used.
"""
