"""Hyper-Kvasir (Borgli et al. 2020): labelled GI-endoscopy images, 23 classes, 10,662 images.

Official layout (hyper-kvasir-labeled-images.zip, extracted):

    ROOT/labeled-images/image-labels.csv    Video file, Organ, Finding, Classification
    ROOT/labeled-images/{lower-gi-tract,upper-gi-tract}/<category>/<class>/<id>.jpg
        e.g. lower-gi-tract/anatomical-landmarks/cecum/0a3f...jpg

Label = the <class> folder (23 classes, sorted by name); image-labels.csv must list every image
(its `Video file` column holds the image's file name without extension) and its `Finding` must
agree with the folder. Group = `Video file`, so all frames of one video stay in one fold; in the
released CSV the column names each image, so groups are in effect single images. ROOT may also be
the labeled-images folder itself. Protocol: 5-fold cross-validation.
"""

from __future__ import annotations

from pathlib import Path

from .layout import missing, no_test_root, read_csv, require_root, scan_images
from .records import Record, Source, safe_key

LABELS = "image-labels.csv"
COLUMNS = ("Video file", "Finding")


def _norm(name: str) -> str:
    return name.strip().lower().replace(" ", "-").replace("_", "-")


def read_hyper_kvasir(*, root=None, test_root=None, seed: int = 0, image_size: int | None = None) -> Source:
    del seed, image_size
    root = require_root(root, "hyper_kvasir", f"ROOT/labeled-images/{LABELS} + <tract>/<category>/<class>/*.jpg")
    no_test_root(test_root, "hyper_kvasir")
    base = root / "labeled-images" if (root / "labeled-images").is_dir() else root
    rows = read_csv(base / LABELS, COLUMNS, "hyper_kvasir")
    tracts = sorted(d for d in base.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not tracts:
        raise FileNotFoundError(f"hyper_kvasir: no <tract>/<category>/<class>/ folders in {base}")
    scan = scan_images(tracts)
    rejected = list(scan.rejected)
    class_of: dict[Path, str] = {}
    for path in scan.by_name.values():
        rel = path.relative_to(base).parts
        if len(rel) == 4:  # tract / category / class / file
            class_of[path] = rel[2]
        else:
            rejected.append({"file": str(path), "reason": "not at labeled-images/<tract>/<category>/<class>/<file>"})
    class_names = sorted(set(class_of.values()))
    label_of = {c: i for i, c in enumerate(class_names)}

    by_stem = {p.stem: p for p in class_of}
    records, listed = [], set()
    for row in rows:
        stem = row["Video file"]
        path = by_stem.get(stem)
        if path is None:
            rejected.append(missing(f"{stem}.jpg", LABELS))
        elif path in listed:
            rejected.append({"file": str(path), "reason": f"listed twice in {LABELS}"})
        elif _norm(row["Finding"]) != _norm(class_of[path]):
            listed.add(path)
            rejected.append({"file": str(path), "reason": f"{LABELS} says Finding={row['Finding']!r} but the "
                                                          f"image is in folder {class_of[path]!r}"})
        else:
            listed.add(path)
            cls = class_of[path]
            records.append(Record(key=safe_key(stem), label=label_of[cls], class_name=cls,
                                  group=f"video-{stem}", path=path))
    rejected += [{"file": str(p), "reason": f"image not listed in {LABELS}"} for p in sorted(class_of) if p not in listed]
    return Source(name="hyper_kvasir", class_names=class_names, records=records, rejected=rejected, default_folds=5,
                  options={"root": str(root.resolve()), "group_by": "Video file"})
