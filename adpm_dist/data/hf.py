"""`--dataset hf:OWNER/NAME`: a Hugging Face dataset, read through the `datasets` library.

    python -m adpm_dist.data.prepare --dataset hf:OWNER/NAME --image-key image --label-key label \\
        [--split train] [--group-key patient_id] --out data/name

NAME is a Hub id (`owner/name`, downloaded into `HF_HOME` and read from there; with
`HF_HUB_OFFLINE=1` only that cache is read), or a local directory: one written by `save_to_disk`,
or a dataset repository's files (e.g. `data/train-*.parquet`, a clone of the Hub repository).
`datasets` does the reading and honours both variables itself.

Each row becomes one sample: the image column's original bytes (a `datasets.Image` feature, read
undecoded) are written to a temporary folder and prepared like any file, so an unreadable image is
a rejection with its reason, as in an image folder. Labels: a `ClassLabel` column keeps its names
and order; any other column's distinct values, sorted, become the classes. Group: `--group-key`'s
value (patient or lesion id), else each row its own group. Keys: `<split>-<row number>`.
"""
from __future__ import annotations

import atexit
import importlib.util
import shutil
import tempfile
from pathlib import Path

from ..extras import MissingExtra
from .records import Record, Source, safe_key

PREFIX = "hf:"
EXTRA = "hf"


def is_hf(dataset: str) -> bool:
    return dataset.startswith(PREFIX)


def _load(name: str, split: str):
    if importlib.util.find_spec("datasets") is None:
        raise MissingExtra(f"--dataset {PREFIX}{name} needs the `datasets` library, which is not installed: "
                           f"pip install 'adpm-dist[{EXTRA}]' (or pip install -e '.[{EXTRA}]' in a checkout)")
    import datasets

    local = Path(name)
    try:
        if local.is_dir() and ((local / "state.json").is_file() or (local / "dataset_dict.json").is_file()):
            loaded = datasets.load_from_disk(str(local))
            if isinstance(loaded, datasets.DatasetDict):
                if split not in loaded:
                    raise ValueError(f"{PREFIX}{name}: no split {split!r} (splits: {sorted(loaded)})")
                loaded = loaded[split]
            return loaded
        return datasets.load_dataset(str(local) if local.is_dir() else name, split=split)
    except (FileNotFoundError, ConnectionError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise FileNotFoundError(f"{PREFIX}{name} (split {split!r}) cannot be read: {first} (HF_HOME and "
                                "HF_HUB_OFFLINE decide where it is looked for)") from None


def _column(table, key: str, what: str, name: str) -> None:
    if key not in table.column_names:
        raise ValueError(f"{PREFIX}{name}: no column {key!r} for {what} (columns: {table.column_names})")


def _classes(table, label_key: str) -> tuple[list[str], list[str]]:
    """(class names in label order, each row's class name)."""
    feature = table.features[label_key]
    values = table[label_key]
    names = getattr(feature, "names", None)
    if names:
        return list(names), [names[v] for v in values]
    as_text = [str(v) for v in values]
    numeric = all(isinstance(v, int) for v in values)
    return sorted(set(as_text), key=(int if numeric else str)), as_text


def _extension(data: bytes, path: str | None) -> str:
    if path and Path(path).suffix:
        return Path(path).suffix.lower()
    return ".png" if data[:8] == b"\x89PNG\r\n\x1a\n" else ".jpg"  # only a hint: encode.py identifies the bytes


def read_hf(*, name: str, root=None, test_root=None, seed: int = 0, image_size: int | None = None,
            image_key: str = "image", label_key: str = "label", split: str = "train",
            group_key: str | None = None) -> Source:
    del seed, image_size
    if root is not None or test_root is not None:
        raise ValueError(f"--dataset {PREFIX}{name} reads the dataset by name; --root / --test-root are not used "
                         f"(a local copy: --dataset {PREFIX}/path/to/it)")
    import datasets

    table = _load(name, split)
    for key, what in ((image_key, "--image-key"), (label_key, "--label-key"), (group_key, "--group-key")):
        if key is not None:
            _column(table, key, what, name)
    if isinstance(table.features[image_key], datasets.Image):
        table = table.cast_column(image_key, datasets.Image(decode=False))
    class_names, row_classes = _classes(table, label_key)
    label_of = {c: i for i, c in enumerate(class_names)}
    folder = Path(tempfile.mkdtemp(prefix="adpm_hf_"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    records, rejected = [], []
    groups = table[group_key] if group_key else None
    for i, (cell, cls) in enumerate(zip(table[image_key], row_classes)):
        key = safe_key(split, f"{i:06d}")
        data = cell.get("bytes") if isinstance(cell, dict) else None
        source_path = cell.get("path") if isinstance(cell, dict) else None
        if data is None and source_path and Path(source_path).is_file():
            data = Path(source_path).read_bytes()
        if data is None:
            rejected.append({"file": f"{PREFIX}{name}[{split}][{i}]", "reason": f"no image bytes in {image_key!r}"})
            continue
        path = folder / f"{key}{_extension(data, source_path)}"
        path.write_bytes(data)
        group = key if groups is None or groups[i] in (None, "") else f"{group_key}-{groups[i]}"
        records.append(Record(key=key, label=label_of[cls], class_name=cls, group=group, path=path))
    return Source(name=f"{PREFIX}{name}", class_names=class_names, records=records, rejected=rejected,
                  default_folds=5, options={"hf": name, "split": split, "image_key": image_key,
                                            "label_key": label_key, "group_key": group_key,
                                            "rows": len(table), "fingerprint": getattr(table, "_fingerprint", None)})
