"""How one run's batches are made: where the augmentation runs (`data.augment_on`) and whether the
decoded images are kept (`data.cache`). The engine asks a DataFeed for its loaders; everything
below it (stream.py's planning, ranks, workers, order) is the same for every setting.

augment_on: cpu    the per-image PIL transforms in the loader workers (transforms.py), float batches;
            device the loader yields uint8 squares at the stored size, the batch is augmented on the
                   training device in one affine resampling (device_augment.py);
            auto   device where the process has an accelerator (or data.cache=device), cpu elsewhere.
cache:      none | host | device (cache.py).

Loader workers: each training worker reads whole shards, so a rank with fewer shards than
data.num_workers uses as many workers as it has shards (`workers_for`, said once) instead of
refusing; only fewer shards than ranks is refused (stream.train_batches).
"""
from __future__ import annotations

import torch

from .augment import Extra
from .cache import canvas_of, device_cache, host_cache
from .device_augment import DeviceFeed, HostSquares
from .manifest import Manifest
from .stream import eval_batches, train_batches
from .transforms import IMAGENET_MEAN, IMAGENET_STD, build_transform


def resolve_augment_on(augment_on: str, cache: str, device, auto_augment: str = "none") -> str:
    """'cpu' or 'device' for data.augment_on (auto: device on an accelerator or with a device cache,
    cpu when data.auto_augment asks for what only the per-image path does)."""
    if augment_on != "auto":
        return augment_on
    if auto_augment != "none" and cache != "device":
        return "cpu"
    return "device" if torch.device(device).type != "cpu" or cache == "device" else "cpu"


def workers_for(manifest: Manifest, parts, exclude_keys, world_size: int, num_workers: int) -> int:
    """The training loader workers one rank can use: data.num_workers, or fewer when the shards
    holding training samples (`parts` less `exclude_keys`) do not give every rank that many.
    A pure function of the data and the config, so a resumed run gets the same count (the count
    decides which samples share a batch). Class-balanced epochs may leave a shard without copies;
    stream.train_batches then still refuses, naming the numbers."""
    shards = {r.shard for r in manifest.rows(manifest.check_parts(parts)) if r.key not in exclude_keys}
    per_rank = len(shards) // max(1, world_size)
    if num_workers <= 1 or per_rank >= num_workers:
        return num_workers
    return per_rank  # 0: fewer shards than ranks, which stream.train_batches refuses


class DataFeed:
    """Loaders of one run for `data` (the config's DataConfig) on `device`; builds the cache once."""

    def __init__(self, data, manifest: Manifest, device, *, mean_std: tuple = (IMAGENET_MEAN, IMAGENET_STD)):
        """`mean_std`: the normalisation (transforms.normalisation of the run's config)."""
        self.data, self.manifest, self.device = data, manifest, torch.device(device)
        self.mean_std = tuple(mean_std)
        self.augment_on = resolve_augment_on(data.augment_on, data.cache, self.device, data.auto_augment)
        self.canvas = canvas_of(manifest, data.image_size)
        self.source, self.pixels = None, None
        self.workers_said = False
        if data.cache == "host":
            self.source = host_cache(manifest, self.canvas)
        elif data.cache == "device":
            self.source, self.pixels = device_cache(manifest, self.canvas, self.device)

    def describe(self) -> str:
        decoded = f", {self.source.decoded} images decoded into it" if self.source is not None else ""
        return f"augment_on={self.augment_on}, cache={self.data.cache}{decoded}"

    def transform(self, train: bool):
        d = self.data
        if self.augment_on == "device":
            return HostSquares(self.canvas, train, hflip=d.hflip, vflip=d.vflip, rotation=d.rotation,
                               extra=Extra.of(d))
        mean, std = self.mean_std
        return build_transform(d.image_size, train=train, hflip=d.hflip, vflip=d.vflip, rotation=d.rotation,
                               mean=mean, std=std, extra=Extra.of(d))

    def wrap(self, loader, train: bool):
        if self.augment_on != "device":
            return loader
        pixels_of = (lambda slots: self.pixels[slots]) if self.pixels is not None else None
        return DeviceFeed(loader, self.device, self.data.image_size, train, normalize=self.mean_std,
                          pixels_of=pixels_of)

    def train_batches(self, parts, batch_size: int, **kwargs):
        asked = kwargs.get("num_workers", 0)
        kwargs["num_workers"] = workers_for(self.manifest, parts, kwargs.get("exclude_keys", ()),
                                            kwargs.get("world_size", 1), asked)
        if kwargs["num_workers"] != asked and not self.workers_said and kwargs.get("rank", 0) == 0:
            print(f"data: {kwargs['num_workers']} training loader worker(s) per rank instead of data.num_workers="
                  f"{asked}: the training parts have too few shards for {kwargs.get('world_size', 1)} rank(s) x "
                  f"{asked} (each worker reads whole shards; smaller shards: prepare --samples-per-shard)", flush=True)
        self.workers_said = True
        loader = train_batches(self.manifest, parts, batch_size, self.transform(True), source=self.source, **kwargs)
        return self.wrap(loader, True)

    def eval_batches(self, parts, batch_size: int, **kwargs):
        loader = eval_batches(self.manifest, parts, batch_size, self.transform(False), source=self.source, **kwargs)
        return self.wrap(loader, False)
