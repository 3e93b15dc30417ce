"""The search on Ray Tune and Optuna: Ray started or joined (``session``), one Tuner over every model
(``driver``), each model's Optuna study asked and told (``searcher``, ``studies``), ASHA per model and the epoch
budget (``scheduler``), the trials run at once (``resources``), the progress lines (``progress``)."""
