"""The data options every command shares: which data, decoded how, split how, capped where.

``search.run`` and ``trainables.train`` both declare them with ``add_data_arguments`` and read them back with
``DataOptions.from_args``, so the two commands take the same flags, with the same help, the data-set names from
the registry, and the same checks. No torch here: the flags are checked before anything heavy loads.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from imagesets.cache import prepare_options
from imagesets.registry import DataError, get, is_registered, names

Limit = tuple[int | None, int | None, int | None]  # at most (train, validation, test) images; None: all


@dataclass(frozen=True)
class DataOptions:
    """Which images a command trains and evaluates on."""

    dataset: str = "mnist"  # a registered data set's name, or a folder of images
    data_dir: str | None = None  # the registered data sets' folder (None: $SEARCH_DATA_DIR, else ./data)
    image_size: int | None = None  # every image resized to this once, when decoded (None: the data's own)
    channels: int | None = None  # 1 (gray) or 3 (RGB); None: the data's own
    cache_dir: str | None = None  # where decoded images are cached (None: imagesets.default_cache_dir())
    val_size: int | None = None  # validation images carved from training (None: 5,000, or a tenth of a small set)
    limit: Limit = (None, None, None)

    @classmethod
    def from_args(cls, args: argparse.Namespace, caps: Limit = (None, None, None)) -> DataOptions:
        """The options ``add_data_arguments`` declared, checked; ``caps``: a command's own (``--smoke``'s), below
        ``--train-size``. Raises ``DataError`` naming the flag at fault."""
        for value, flag in ((args.val_size, "--val-size"), (args.train_size, "--train-size")):
            if value is not None and value < 1:
                raise DataError(f"{flag} must be positive, got {value}")
        if not is_registered(args.dataset) and not Path(args.dataset).expanduser().is_dir():
            try:
                get(args.dataset)  # its error names the registered sets, or the missing folder
            except DataError as e:
                raise DataError(f"--dataset: {e}") from None
        prepare_options(args.image_size, args.channels)
        return cls(args.dataset, args.data_dir, args.image_size, args.channels, args.cache_dir, args.val_size,
                   (args.train_size or caps[0], *caps[1:]))

    @property
    def label(self) -> str:
        """The data set's short name: the registered name, or the folder's own name."""
        return self.dataset if is_registered(self.dataset) else Path(self.dataset).expanduser().resolve().name


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the data flags (read back with ``DataOptions.from_args``)."""
    parser.add_argument("--dataset", default="mnist", metavar="NAME|PATH",
                        help=f"a registered data set ({', '.join(names())}) or a folder of images: "
                             "PATH/<class>/<image> (validation and test carved from it, stratified, with a fixed seed), "
                             "or PATH/train/<class>/... with PATH/test/<class>/... and optionally PATH/val/<class>/...; "
                             "PNG, JPEG, BMP..., gray or colour, any sizes (see --image-size)")
    parser.add_argument("--data-dir", default=None,
                        help="folder of the registered data sets, in torchvision's layout (default: $SEARCH_DATA_DIR, "
                             "else ./data, where they are downloaded when online)")
    parser.add_argument("--image-size", type=int, default=None, metavar="N",
                        help="resize every image to NxN once, when it is decoded (default: the data's own size; needed "
                             "when a folder's images differ in size). Smaller trains faster, larger keeps more detail")
    parser.add_argument("--channels", type=int, default=None, choices=(1, 3),
                        help="1 (gray) or 3 (RGB) channels (default: gray if every image is gray, else RGB)")
    parser.add_argument("--cache-dir", default=None,
                        help="where decoded images are cached for later runs (default: $SEARCH_CACHE_DIR, else "
                             "~/.cache/hpsearch); the data folder itself may be read-only")
    parser.add_argument("--val-size", type=int, default=None,
                        help="validation images carved from the training set (default: 5000, or a tenth of a smaller "
                             "training set)")
    parser.add_argument("--train-size", type=int, default=None, metavar="N",
                        help="train on N of the remaining training images (a fixed subset, the same for every trial): "
                             "quicker, rougher; validation and test stay whole (default: all)")
