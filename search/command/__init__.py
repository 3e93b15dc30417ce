"""The command line and its checks, up to the search's complete plan: ``settings.ask`` checks the flags before any
data is read (``Asked``), ``plan.plan`` makes ``Settings`` once the data is carved; ``plans`` holds what each model
is asked and planned; ``ports``, ``storage`` and ``cluster`` check where the search listens, writes and runs."""
