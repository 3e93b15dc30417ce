"""The network of ``models/cnn.py``: conv blocks (conv, optional batch norm, ReLU, pooling), then a
fully connected head."""

from __future__ import annotations

from torch import nn

from models.cnn import CNNConfig
from models.config import from_flat
from models.registry import BuildContext, Config, DataShape


class CNN(nn.Module):
    def __init__(self, cfg: CNNConfig, shape: DataShape = DataShape()) -> None:
        super().__init__()
        final_size = cfg.feature_sizes(shape.image_size)[-1]
        layers: list[nn.Module] = []
        channels_in, channels = shape.channels, cfg.channels
        for block in range(cfg.blocks):
            pad = cfg.kernel_size // 2 if cfg.padding == "same" else 0
            stride = cfg.stride if block == 0 else 1
            # A conv followed by batch norm needs no bias: the norm's shift replaces it.
            layers.append(nn.Conv2d(channels_in, channels, cfg.kernel_size, stride, pad, bias=not cfg.batch_norm))
            if cfg.batch_norm:
                layers.append(nn.BatchNorm2d(channels))
            layers.append(nn.ReLU(inplace=True))
            layers.append(nn.MaxPool2d(2) if cfg.pool == "max" else nn.AvgPool2d(2))
            channels_in, channels = channels, channels * 2
        self.features = nn.Sequential(*layers)
        flat = channels_in * final_size * final_size
        head: list[nn.Module] = [nn.Flatten(), nn.Dropout(cfg.dropout)]
        if cfg.fc_width:
            head += [nn.Linear(flat, cfg.fc_width), nn.ReLU(inplace=True), nn.Dropout(cfg.dropout)]
            flat = cfg.fc_width
        head.append(nn.Linear(flat, shape.num_classes))
        self.head = nn.Sequential(*head)

    def forward(self, x):  # x: (B, C, S, S)
        return self.head(self.features(x))  # (B, C, s, s) -> (B, num_classes)


def build(config: Config, ctx: BuildContext = BuildContext()) -> nn.Module:
    """The CNN described by the architecture keys of a flat config."""
    return CNN(from_flat(CNNConfig, config), ctx.shape)
