"""The search, by what each part does (``python -m search.run`` is its command):

- ``command``: the command line and its checks (``settings.ask``), the plan once the data is carved
  (``plan.plan``: ``Settings``), the dashboard's port, the storage, joining a cluster;
- ``engine``: the search on Ray Tune and Optuna: Ray's start (``session``), the Tuner (``driver``), the per-model
  searcher, studies and schedulers, the resources a trial takes;
- ``finish``: what follows each model's search: its winner tested once, refit, bundled and costed (``endphase``),
  the classical baselines, the repeats, the exports;
- ``resume``: continuing an experiment after a kill (``--resume``).

``run`` ties them together: flags checked, data carved and planned, Ray started, the search run and exported.
"""
