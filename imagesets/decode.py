"""Images to uint8 arrays of one channel count and one size: the same conversion for every source.

A folder's files are decoded in worker processes (one per core), each writing its images straight
into the cache file (a memory map), so a large folder never sits in memory twice. Arrays that a
registered data set already holds are converted with the same Pillow calls, so an image gives the same
bytes whether it came from an IDX file or a PNG.
"""

from __future__ import annotations

import multiprocessing
import os
import tempfile
import warnings
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor

import numpy as np
from PIL import Image

# Pillow modes without colour: such an image is gray (LA and PA-less palettes are handled by Pillow's convert).
GRAY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
CHUNK = 512  # files per task handed to a worker: large enough that the hand-over costs little


def conform(image: Image.Image, channels: int, size: int) -> np.ndarray:
    """A Pillow image as uint8 (channels, size, size): gray (Pillow's ITU-R 601-2 luma) or RGB, with
    transparency laid over black, resized bilinearly (Pillow antialiases when shrinking)."""
    if "A" in image.mode or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba)
    image = image.convert("L" if channels == 1 else "RGB")
    if image.size != (size, size):
        image = image.resize((size, size), Image.BILINEAR)
    array = np.asarray(image, dtype=np.uint8)
    return array[None] if channels == 1 else array.transpose(2, 0, 1)  # (C, S, S)


def conform_array(images: np.ndarray, channels: int, size: int) -> np.ndarray:
    """uint8 (N, H, W) or (N, H, W, 3) -> (N, channels, size, size). Without a change of size or of
    colour this is a reshape; otherwise each image goes through ``conform``."""
    native = 1 if images.ndim == 3 else images.shape[3]
    if native == channels and images.shape[1] == images.shape[2] == size:
        return np.ascontiguousarray(images[:, None] if images.ndim == 3 else images.transpose(0, 3, 1, 2))
    out = np.empty((len(images), channels, size, size), dtype=np.uint8)
    for i, image in enumerate(images):
        out[i] = conform(Image.fromarray(image), channels, size)
    return out


def _header(path: str, max_pixels: int) -> tuple[int, int, str] | str:
    """(width, height, mode) from the file's header only, or why it cannot be an image."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # judged below, against max_pixels
            with Image.open(path) as image:
                width, height = image.size
                mode = image.mode
    except Image.DecompressionBombError as e:
        return f"past Pillow's decompression-bomb limit ({e})"
    except Exception as e:  # Pillow raises many kinds for a damaged file
        return f"{type(e).__name__}: {e}"
    if width * height > max_pixels:
        return (f"{width}x{height} = {width * height:,} pixels, past Pillow's decompression-bomb limit of "
                f"{max_pixels:,} (PIL.Image.MAX_IMAGE_PIXELS)")
    return width, height, mode


def _headers(paths: Sequence[str], start: int, max_pixels: int) -> list[tuple[int, int, str] | str]:
    """Each header of a chunk (``start``, its offset, is what ``_decode`` needs; unused here)."""
    return [_header(p, max_pixels) for p in paths]


def _decode(paths: Sequence[str], start: int, out_file: str, channels: int, size: int) -> list[tuple[str, str]]:
    """Decode ``paths`` into rows ``start...`` of the (N, C, S, S) array in ``out_file``; returns the
    files that failed, with why (a file whose header read may still be truncated or damaged)."""
    out = np.load(out_file, mmap_mode="r+")
    failed = []
    for i, path in enumerate(paths):
        try:
            out[start + i] = decode_file(path, channels, size)
        except Exception as e:  # Pillow raises many kinds for a damaged file
            failed.append((path, f"{type(e).__name__}: {e}"))
    out.flush()
    return failed


def decode_file(path: str, channels: int, size: int) -> np.ndarray:
    """One image file as uint8 (channels, size, size), the way a search decodes its data (``conform``):
    the one path from a file to a model's input, for training and for ``trainables.predict`` alike."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # a folder's headers were judged already
        with Image.open(path) as image:
            if image.format == "JPEG":
                image.draft("RGB" if channels == 3 else "L", (size, size))  # decode big JPEGs at a fraction
            return conform(image, channels, size)


def _chunked(function, paths: Sequence[str], *same) -> list:
    """``function(chunk, start, *same)`` over chunks of ``CHUNK`` paths, in one worker process per core
    (in this process when there is a single chunk), results concatenated in the order of ``paths``."""
    starts = list(range(0, len(paths), CHUNK))
    args = [[paths[s:s + CHUNK] for s in starts], starts] + [[value] * len(starts) for value in same]
    workers = min(os.cpu_count() or 1, len(starts))
    if workers <= 1:
        return [item for part in map(function, *args) for item in part]
    # fork: the workers need nothing but Pillow and numpy, and start in milliseconds (spawn would
    # import the command line's modules, torch among them, in each one).
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else None
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method)) as pool:
        return [item for part in pool.map(function, *args) for item in part]


def read_headers(paths: Sequence[str], max_pixels: int) -> list[tuple[int, int, str] | str]:
    """Each file's (width, height, mode), or why it cannot be read, in the order given."""
    return _chunked(_headers, paths, max_pixels)


def decode_into(paths: Sequence[str], out_file: str, channels: int, size: int) -> list[tuple[str, str]]:
    """Decode every file into the .npy array ``out_file`` (already created, one row per file);
    returns the files that could not be decoded, with why."""
    return _chunked(_decode, paths, out_file, channels, size)


def decode_files(paths: Sequence[str], channels: int, size: int) -> tuple[np.ndarray, list[tuple[str, str]]]:
    """(uint8 (N, channels, size, size) images of the files that decoded, in the order given; the files that
    did not, with why): ``decode_into`` through a temporary file, so workers on every core share the work."""
    with tempfile.TemporaryDirectory(prefix="hpsearch-decode-") as folder:
        out_file = os.path.join(folder, "images.npy")
        np.lib.format.open_memmap(out_file, mode="w+", dtype=np.uint8, shape=(len(paths), channels, size, size)).flush()
        failed = decode_into(paths, out_file, channels, size) if paths else []
        bad = {path for path, _ in failed}
        keep = [i for i, path in enumerate(paths) if path not in bad]
        images = np.load(out_file, mmap_mode="r")[keep] if keep else np.zeros((0, channels, size, size), np.uint8)
    return np.ascontiguousarray(images), failed
