"""Images/s of the shard stream vs torchvision ImageFolder + DataLoader over the same files (issue 3).

    python -m benchmarks.data_throughput [--images 1000] [--workers 0 1 2] [--repeats 3] \
        [--workdir /tmp/adpm_data_bench] [--no-write]

1. Generates synthetic but JPEG-realistic photos (smooth colour gradients + blobs + noise, quality
   90) in ImageFolder layout, twice: (a) 224x224 and (b) 600x450 (HAM10000's size).
2. Shards each set with `python -m adpm_dist.data.prepare --dataset imagefolder` (default shorter
   side 256: the 224 px JPEGs are stored byte-for-byte, the 600x450 ones resized to 341x256).
3. Times one training epoch (batch 32, the project's training transform: centre square crop,
   resize 224, flip, rotation +-30 deg, ImageNet normalisation) for each pipeline and DataLoader
   worker count, interleaved, `--repeats` rounds; the best round is kept (the machine is shared:
   the fastest round is the least disturbed one) and the median is shown too. Two rates: images per
   wall-clock second, and images per CPU second (this process + its DataLoader workers), which
   measures the work per image and barely depends on how busy the machine is:
     imagefolder        torchvision.datasets.ImageFolder (PIL loader) + DataLoader(shuffle=True)
     imagefolder+draft  the same with a loader using PIL's JPEG draft mode (decode at 1/2 scale if >= 224)
     webdataset         webdataset.WebDataset(shards).decode("pil") + same transform, batched in workers
     stream             adpm_dist.data.stream.train_batches (what training uses), local shards
     stream-http        the same shards served by `python -m http.server --bind 127.0.0.1`
     stream-s3          the same shards published to moto's S3 server on 127.0.0.1 (s3fs reads them)
   plus single-process references: tar walk alone and decode alone (PIL, decode_jpeg, draft).
   `--transform v2` runs everything with the same steps written as torchvision v2 ops (the
   transform as it was before issue 3) for a before/after comparison.
`--host-cost` (issue 26) prints only the host cost per image of augment_on=cpu vs device vs
cache=host at 224 px (600x450 originals) and 32 px (digits-LT), side by side.
Prints a markdown table and (unless --no-write) appends a dated section to benchmarks/RESULTS.md
with the command and the load average (other processes share the cores: read the figures with it).
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gc
import io
import os
import resource
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]

from adpm_dist.data.manifest import load_manifest  # noqa: E402
from adpm_dist.data.prepare import prepare  # noqa: E402
from adpm_dist.data.stream import decode_sample, train_batches  # noqa: E402
from adpm_dist.data.tario import read_samples  # noqa: E402
from adpm_dist.data.transforms import build_transform  # noqa: E402

CLASSES = ("c0", "c1", "c2", "c3")
BATCH = 32


def synthetic_photo(w: int, h: int, rng: np.random.Generator) -> Image.Image:
    """Smooth gradients + a few soft blobs + sensor-like noise: compresses like a photo, not like noise."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    t = (x / w * np.cos(rng.uniform(0, np.pi)) + y / h * np.sin(rng.uniform(0, np.pi)))[..., None]
    img = c0 * (1 - t) + c1 * t
    for _ in range(4):
        cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0.05, 0.3) * min(w, h)
        blob = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * r * r))[..., None]
        img = img * (1 - 0.6 * blob) + rng.uniform(0, 255, 3) * 0.6 * blob
    img += rng.normal(0, 6, img.shape)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def make_images(root: Path, n: int, size: tuple[int, int], seed: int = 0) -> Path:
    done = root / ".complete"
    if done.is_file() and done.read_text() == f"{n} {size}":
        return root
    rng = np.random.default_rng(seed)
    for i in range(n):
        d = root / CLASSES[i % len(CLASSES)]
        d.mkdir(parents=True, exist_ok=True)
        synthetic_photo(*size, rng).save(d / f"img{i:05d}.jpg", format="JPEG", quality=90)
    done.write_text(f"{n} {size}")
    return root


def make_shards(images: Path, out: Path) -> Path:
    if not (out / "manifest.json").is_file():
        n = sum(1 for _ in images.rglob("*.jpg"))  # >= 8 shards: every worker count tried gets whole shards
        prepare("imagefolder", out, root=images, folds=0, samples_per_shard=max(1, min(256, n // 8)), progress=False)
    return out


def draft_loader(path: str) -> Image.Image:
    """ImageFolder loader that lets libjpeg decode at 1/2, 1/4 or 1/8 scale while staying >= 224 px."""
    with open(path, "rb") as f:
        im = Image.open(f)
        im.draft("RGB", (224, 224))
        return im.convert("RGB")


def run_imagefolder(images: Path, workers: int, tf, loader_fn=None) -> int:
    from torch.utils.data import DataLoader
    from torchvision.datasets import ImageFolder
    from torchvision.datasets.folder import default_loader

    dataset = ImageFolder(str(images), transform=tf, loader=loader_fn or default_loader)
    loader = DataLoader(dataset, batch_size=BATCH, shuffle=True, num_workers=workers, drop_last=True)
    return sum(len(labels) for _, labels in loader)


class _CenterSquareCrop(torch.nn.Module):
    def forward(self, img):
        from torchvision.transforms.v2 import functional as F

        h, w = F.get_size(img)
        return F.center_crop(img, [min(h, w), min(h, w)])


def v2_transform(size: int):
    """The training transform as it was before issue 3: the same steps as torchvision v2 ops."""
    from torchvision.transforms import InterpolationMode, v2

    from adpm_dist.data.transforms import IMAGENET_MEAN, IMAGENET_STD

    bilinear = InterpolationMode.BILINEAR
    return v2.Compose([_CenterSquareCrop(), v2.Resize((size, size), interpolation=bilinear, antialias=True),
                       v2.RandomHorizontalFlip(p=0.5), v2.RandomRotation(30.0, interpolation=bilinear, fill=0),
                       v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def run_stream(shards: Path | str, workers: int, tf, epoch: int) -> int:
    """One epoch from `shards`: a local directory or a URL (the manifest is loaded in the timing, as
    training loads it once per run)."""
    loader = train_batches(load_manifest(shards), "train", BATCH, tf, epoch=epoch, seed=0, num_workers=workers)
    return sum(len(b["label"]) for b in loader)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(args: list[str], port: int) -> subprocess.Popen:
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    for _ in range(400):
        with contextlib.suppress(OSError):
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return proc
        time.sleep(0.05)
    _stop(proc)
    raise RuntimeError(f"{args}: not listening on 127.0.0.1:{port}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


@contextlib.contextmanager
def loopback_servers(workdir: Path, http: bool, s3: bool):
    """{"http": base URL of workdir, "s3": "s3://bench"}: an HTTP server and a moto S3 server, both on
    127.0.0.1 only, stopped (process group, bounded wait) on exit."""
    procs, urls = [], {}
    try:
        if http:
            port = _free_port()
            procs.append(_serve([sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "--directory",
                                 str(workdir), str(port)], port))
            urls["http"] = f"http://127.0.0.1:{port}"
        if s3:
            port = _free_port()
            procs.append(_serve([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], port))
            os.environ.update(AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}", AWS_ACCESS_KEY_ID="bench",
                              AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")
            import s3fs

            s3fs.S3FileSystem.clear_instance_cache()
            s3fs.S3FileSystem().mkdir("bench")
            urls["s3"] = "s3://bench"
        yield urls
    finally:
        for proc in procs:
            _stop(proc)


def shard_sources(shards: Path, urls: dict[str, str]) -> dict[str, Path | str]:
    """Where each stream pipeline reads `shards` from (publishing them to S3 first)."""
    sources: dict[str, Path | str] = {"stream": shards}
    if "http" in urls:
        sources["stream-http"] = f"{urls['http']}/{shards.name}"
    if "s3" in urls:
        from adpm_dist.data.publish import publish

        sources["stream-s3"] = f"{urls['s3']}/{shards.name}"
        publish(shards, sources["stream-s3"], log=lambda *_: None)
    return sources


def run_webdataset(shards: Path, workers: int, tf) -> int:
    import json

    import webdataset as wds
    from torch.utils.data import DataLoader

    urls = [str(p) for p in load_manifest(shards).parts["train"]]
    ds = (wds.WebDataset(urls, shardshuffle=len(urls), nodesplitter=wds.single_node_only,
                         workersplitter=wds.split_by_worker, empty_check=False)
          .shuffle(1000).decode("pil").to_tuple("jpg;png", "json")
          .map_tuple(tf, lambda meta: json.loads(meta)["label"] if isinstance(meta, bytes) else meta["label"])
          .batched(BATCH))
    return sum(len(labels) for _, labels in DataLoader(ds, batch_size=None, num_workers=workers))


def tar_walk(shards: Path) -> int:
    return sum(1 for p in load_manifest(shards).parts["train"] for _ in read_samples(p))


def decode_rates(shards: Path, images: Path) -> dict[str, float]:
    """Single-process decode-only img/s: stored shard JPEGs (PIL, torchvision decode_jpeg) and originals."""
    from torchvision.io import decode_jpeg

    blobs = [s for p in load_manifest(shards).parts["train"] for s in read_samples(p)]
    originals = [p.read_bytes() for p in sorted(images.rglob("*.jpg"))]

    def pil_draft(data):
        im = Image.open(io.BytesIO(data))
        im.draft("RGB", (224, 224))
        im.load()

    cases = {"decode only: shard JPEG, PIL (stream)": lambda: [decode_sample(s) for s in blobs],
             "decode only: shard JPEG, torchvision decode_jpeg": lambda: [
                 decode_jpeg(torch.frombuffer(bytearray(s["jpg"]), dtype=torch.uint8)) for s in blobs],
             "decode only: original JPEG, PIL (ImageFolder)": lambda: [
                 Image.open(io.BytesIO(d)).convert("RGB") for d in originals],
             "decode only: original JPEG, PIL draft >= 224": lambda: [pil_draft(d) for d in originals]}
    return {name: timed(lambda: len(fn()))[1] for name, fn in cases.items()}  # single process: CPU rate


def _cpu_seconds() -> float:
    """CPU time of this process plus its reaped children (DataLoader workers are joined at epoch end)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def timed(fn) -> tuple[float, float]:
    """(images per wall-clock second, images per CPU second). The second barely depends on how busy
    the shared machine is: it measures the work per image, not our share of the cores."""
    gc.collect()
    c0, t0 = _cpu_seconds(), time.perf_counter()
    n = fn()
    gc.collect()  # let loaders shut their workers down (and get reaped) inside the measurement
    return n / (time.perf_counter() - t0), n / max(_cpu_seconds() - c0, 1e-9)


def measure_set(args, name: str, size: tuple[int, int], tf, urls: dict[str, str]) -> list[list[str]]:
    """Table rows for one image set: every pipeline x worker count, interleaved, then the references."""
    rows = []
    images = make_images(args.workdir / f"images_{name}_{args.images}", args.images, size)
    shards = make_shards(images, args.workdir / f"shards_{name}_{args.images}")
    sources = shard_sources(shards, urls)
    stored = Image.open(io.BytesIO(next(iter(read_samples(load_manifest(shards).parts["train"][0])))["jpg"])).size
    results: dict[tuple[str, int], list[float]] = {}
    for r in range(args.repeats):
        for workers in args.workers:
            for pipe in args.pipelines:
                fn = {"imagefolder": lambda: run_imagefolder(images, workers, tf),
                      "imagefolder+draft": lambda: run_imagefolder(images, workers, tf, draft_loader),
                      "webdataset": lambda: run_webdataset(shards, workers, tf),
                      **{src: (lambda loc=loc: run_stream(loc, workers, tf, epoch=r))
                         for src, loc in sources.items()}}[pipe]
                results.setdefault((pipe, workers), []).append(timed(fn))
    walk = max(timed(lambda: tar_walk(shards))[1] for _ in range(args.repeats))
    decodes = [decode_rates(shards, images) for _ in range(args.repeats)]
    where = [name, f"{stored[0]}x{stored[1]}"]
    for (pipe, workers), vals in results.items():
        wall, cpu = max(v[0] for v in vals), max(v[1] for v in vals)
        base = results.get(("imagefolder", workers))
        ratio = (f"{wall / max(v[0] for v in base):.2f}", f"{cpu / max(v[1] for v in base):.2f}") if base else ("-", "-")
        rows.append(where + [pipe, str(workers), f"{wall:.0f}", f"{statistics.median(v[0] for v in vals):.0f}",
                             f"{cpu:.0f}", *ratio])
    rows.append(where + ["tar walk only (no decode)", "0", "", "", f"{walk:.0f}", "", ""])
    for case in decodes[0]:
        rows.append(where + [case, "0", "", "", f"{max(d[case] for d in decodes):.0f}", "", ""])
    return rows


def host_cost(args) -> str:
    """Issue 26: the loader's host-side cost (images per CPU-second, one process, 0 workers) of
    today's path vs data.augment_on=device (the host part: decode + centre-square slice) vs
    data.cache=host (no decode either), side by side; the batched augmentation's own cost per image
    on this CPU beside the per-image PIL transform; and the cache's bytes per image."""
    from adpm_dist.data.cache import cache_bytes, host_cache, largest_dataset
    from adpm_dist.data.device_augment import DeviceFeed, HostSquares

    digits = args.workdir / "digits_lt_32"
    if not (digits / "manifest.json").is_file():
        prepare("digits_lt", digits, progress=False)
    photos = make_shards(make_images(args.workdir / f"images_600x450_{args.images}", args.images, (600, 450)),
                         args.workdir / f"shards_600x450_{args.images}")
    lines = ["| images (stored) | size | today: augment_on=cpu | augment_on=device, host part | x today | "
             "+ cache=host | x today | batched augmentation on this CPU, ms / image | per-image PIL transform, "
             "ms / image | cache bytes / image | largest dataset cached: 24 GB host | 80 GB GPU |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, shards, size in (("600x450 JPEG (341x256)", photos, 224), ("digits (32x32 PNG)", digits, 32)):
        manifest = load_manifest(shards)
        canvas = manifest.image_size
        source = host_cache(manifest, canvas)
        cases = {"cpu": lambda e: (build_transform(size, train=True), None),
                 "device": lambda e: (HostSquares(canvas, True), None),
                 "cache": lambda e: (HostSquares(canvas, True), source)}
        rates: dict[str, list[float]] = {k: [] for k in cases}
        for r in range(args.repeats):
            for case, make in cases.items():
                tf, src = make(r)
                rates[case].append(timed(lambda: sum(len(b["key"]) for b in train_batches(
                    manifest, "train", BATCH, tf, epoch=r, seed=0, source=src)))[1])
        best = {k: max(v) for k, v in rates.items()}
        batch = next(iter(train_batches(manifest, "train", BATCH, HostSquares(canvas, True), epoch=0, seed=0)))
        feed = DeviceFeed([batch], "cpu", size, True)
        aug = max(timed(lambda: sum(len(next(iter(feed))["key"]) for _ in range(20)))[1] for _ in range(3))
        image = decode_sample(next(iter(read_samples(manifest.parts["train"][0]))))[0]
        tf = build_transform(size, train=True)
        pil = max(timed(lambda: sum(1 for _ in range(20 * BATCH) if tf(image) is not None))[1] for _ in range(3))
        per = cache_bytes(1, canvas)
        lines.append(f"| {name} | {size} | {best['cpu']:.0f} | {best['device']:.0f} | {best['device'] / best['cpu']:.1f}x "
                     f"| {best['cache']:.0f} | {best['cache'] / best['cpu']:.1f}x | {1e3 / aug:.2f} | {1e3 / pil:.2f} | "
                     f"{per:,} | {largest_dataset(24e9, canvas):,} | {largest_dataset(80e9, canvas):,} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=1000, help="images per set")
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--pipelines", nargs="+", default=["imagefolder", "imagefolder+draft", "webdataset", "stream"],
                    choices=["imagefolder", "imagefolder+draft", "webdataset", "stream", "stream-http", "stream-s3"])
    ap.add_argument("--transform", choices=["fast", "v2"], default="fast",
                    help="fast: adpm_dist's build_transform; v2: the same steps as torchvision v2 ops (before)")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/adpm_data_bench"))
    ap.add_argument("--no-write", action="store_true", help="print only; do not append to benchmarks/RESULTS.md")
    ap.add_argument("--host-cost", action="store_true", help="only the issue-26 table: host cost per image of "
                    "augment_on=cpu vs device vs cache=host (images per CPU-second), printed")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)  # what DataLoader workers and torchrun ranks use; avoids oversubscription
    if args.host_cost:
        load = os.getloadavg()
        print(host_cost(args))
        print(f"load average before {load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f}, after "
              f"{'/'.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} cores; images per CPU-second, "
              f"best of {args.repeats}, one process, 1 torch thread")
        return 0

    sets = {"224x224": (224, 224), "600x450": (600, 450)}
    tf = build_transform(224, train=True) if args.transform == "fast" else v2_transform(224)
    rows = []
    load_before = os.getloadavg()
    servers = loopback_servers(args.workdir, "stream-http" in args.pipelines, "stream-s3" in args.pipelines)
    with servers as urls:
        for name, size in sets.items():
            rows += measure_set(args, name, size, tf, urls)
    load_after = os.getloadavg()
    header = ["images", "stream stores", "pipeline", "workers", "img/s wall best", "img/s wall median",
              "img per CPU-s best", "x ImageFolder (wall)", "x ImageFolder (CPU)"]
    table = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]
    cmd = "python -m benchmarks.data_throughput " + shlex.join(argv if argv is not None else sys.argv[1:])
    load = f"load average (1/5/15 min) before {load_before[0]:.1f}/{load_before[1]:.1f}/{load_before[2]:.1f}, " \
           f"after {load_after[0]:.1f}/{load_after[1]:.1f}/{load_after[2]:.1f} on {os.cpu_count()} cores"
    text = "\n".join(table)
    print(text)
    print(load)
    if not args.no_write:
        stamp = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
        section = (f"\n## Data throughput ({stamp})\n\n`{cmd.strip()}`  \n{args.images} images per set, batch "
                   f"{BATCH}, training transform ({args.transform}) at 224 px, best of {args.repeats} interleaved rounds; {load}.\n\n"
                   f"{text}\n")
        results_md = ROOT / "benchmarks" / "RESULTS.md"
        if not results_md.exists():
            results_md.write_text("# Benchmark results\n")
        with open(results_md, "a") as f:
            f.write(section)
        print(f"appended to {results_md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
