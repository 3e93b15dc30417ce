"""The networks (``torch.nn`` modules) of the architectures whose registry entries live one level up.

A model file (``models/cnn.py``) describes its architecture without torch: settings, search space,
defaults, budgets. Its ``build`` imports the network from here when a trial first builds one, so the
command line, which reads the registry to check flags and print ``--help``, starts without loading
torch.
"""
