"""Dataset readers: one function per on-disk layout, all returning a `records.Source`.

Reader signature (keyword-only, so `prepare` can call them uniformly):

    read_<name>(*, root, test_root, seed, image_size, **extra) -> Source

`extra` are dataset-specific options (e.g. digits_lt's imbalance_ratio); a reader rejects
arguments it does not understand (it has no **kwargs catch-all), so typos fail loudly.
Readers only list files and labels; they do not open images (the shard writer does, once).
"""

from __future__ import annotations

from collections.abc import Callable

from .digits_lt import read_digits_lt
from .ham10000 import read_ham10000
from .hyper_kvasir import read_hyper_kvasir
from .imagefolder import read_imagefolder
from .pad_ufes import read_pad_ufes
from .records import Source
from .scin import read_scin

# name (the --dataset value) -> reader; the official layouts are described in each reader's module.
READERS: dict[str, Callable[..., Source]] = {
    "digits_lt": read_digits_lt,
    "ham10000": read_ham10000,
    "hyper_kvasir": read_hyper_kvasir,
    "imagefolder": read_imagefolder,
    "pad_ufes": read_pad_ufes,
    "scin": read_scin,
}
