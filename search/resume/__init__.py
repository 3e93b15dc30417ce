"""Continuing an experiment (``--resume``), in one place:

- ``command``: the saved command line (what a resume continues), growing it (``--num-samples``);
- ``checks``: refusing a resume whose data or search space changed (``space``: the space's check);
- ``state``: whether Tune saved a state, restoring it, and bringing the restored searcher and Tune's trial
  generator in line with the restored trial list (adopting trials, reconciling, the generator's count).

What each part saves is saved by its owner as it runs (the searcher with its studies and schedulers, the epoch
budget's count, the Optuna journal); this package decides and does everything that reads them back.
"""
