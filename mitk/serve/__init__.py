"""A warm worker for per-file calls: ``mitk serve`` keeps torch, MONAI and the plugins imported; with
``MITK_SERVE=1`` in its environment, a ``mitk`` call hands its command line to the worker, which runs it in a
forked child with the caller's terminal, folder and environment, exactly as the call would have run itself.

- :mod:`mitk.serve.protocol`: where the socket lives, who may use it, and the messages (light imports only:
  the client runs before anything heavy).
- :mod:`mitk.serve.client`: hands a call to the worker, or says to run it here.
- :mod:`mitk.serve.worker`: the server loop, one forked child per call (forked ahead, between calls).
- :mod:`mitk.serve.child`: a call in its child: the caller's terminal, folder and environment, then the job.
- :mod:`mitk.serve.models`: the models (and mitk's modules) the worker keeps loaded between calls.
"""
