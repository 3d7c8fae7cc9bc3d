"""The dock widgets' models, without Qt: what each dock shows and asks for.

Each ``_widgets/<dock>.py`` is a thin Qt view over ``models/<dock>.py``:
``recorder`` (the recorder: settings, one session of runs, status), ``batch_export``
(what the batch-export dock asks for and gets back) and ``inspector`` (what the
recording inspector shows). Docks over objects that scripts drive as well view them
directly: the experiment panel an ``experiment.ExperimentRun``, the live-traces panel
a ``live.LiveTraces``.
"""
