"""Data loading, the training and evaluation loop, metrics, and the Tune trainable."""
