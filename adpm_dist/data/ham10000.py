"""HAM10000 (Tschandl et al. 2018): 10,015 dermatoscopic images (600x450), 7 diagnoses.

Two official layouts are accepted (detected from the CSV present in ROOT):

HAM10000 (Harvard Dataverse):
    ROOT/HAM10000_metadata.csv     lesion_id, image_id, dx, dx_type, age, sex, localization[, dataset]
    ROOT/HAM10000_images_part_1/ISIC_0024306.jpg, ROOT/HAM10000_images_part_2/...
ISIC 2018 Task 3 (the same images):
    ROOT/ISIC2018_Task3_Training_GroundTruth.csv   image, MEL, NV, BCC, AKIEC, BKL, DF, VASC (one-hot)
    ROOT/ISIC2018_Task3_Training_Input/ISIC_0024306.jpg
    ROOT/ISIC2018_Task3_Training_LesionGroupings.csv   image, lesion_id, ... (optional)

Class names are the ISIC 2018 column order (MEL, NV, BCC, AKIEC, BKL, DF, VASC), which is DiffMIC's
label order and the paper's Table 7 order, for both layouts. Group = `lesion_id` (several images
of one lesion never straddle train and test); without lesion ids each image is its own group and
a warning says so. Protocol: stratified grouped 7:3 train/test split (paper: "Similar to [11]");
`--folds 5` gives 5-fold cross-validation instead.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from .layout import column_class, join_rows, no_test_root, read_csv, require_root, scan_images
from .records import Record, Source, safe_key

CLASS_NAMES = ["MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"]
HAM_CSV = "HAM10000_metadata.csv"
ISIC_CSV = "ISIC2018_Task3_Training_GroundTruth.csv"
ISIC_IMAGES = "ISIC2018_Task3_Training_Input"
ISIC_GROUPS = "ISIC2018_Task3_Training_LesionGroupings.csv"
TEST_FRACTION = 0.3


def _record(path: Path, dx: str, group: str) -> Record:
    return Record(key=safe_key(path.stem), label=CLASS_NAMES.index(dx), class_name=dx, group=group, path=path)


def _read_ham(root: Path) -> tuple[list[Record], list[dict]]:
    rows = read_csv(root / HAM_CSV, ("lesion_id", "image_id", "dx"), "ham10000")
    # Dataverse names the folders HAM10000_images_part_{1,2}; the Kaggle copy adds lower-case duplicates.
    folders = sorted(d for d in root.iterdir() if d.is_dir() and d.name.lower().startswith("ham10000_images"))
    if not folders:
        raise FileNotFoundError(f"ham10000: no HAM10000_images_part_1/ or HAM10000_images_part_2/ under {root}")
    scan = scan_images(folders)
    return join_rows(rows, scan, scan.stem_index(), HAM_CSV, file_column="image_id", file_suffix=".jpg",
                     class_of=column_class("dx", CLASS_NAMES),
                     make_record=lambda row, path, dx: _record(path, dx, f"lesion-{row['lesion_id'] or row['image_id']}"))


def _one_hot_label(row: dict) -> str:
    """The class whose ISIC ground-truth column is 1.0; ValueError (the rejection reason) otherwise."""
    try:
        hot = [c for c in CLASS_NAMES if float(row[c] or 0) == 1.0]
    except ValueError:
        hot = []
    if len(hot) != 1:
        raise ValueError("ground truth is not one-hot over " + ",".join(CLASS_NAMES))
    return hot[0]


def _read_isic2018(root: Path) -> tuple[list[Record], list[dict], str]:
    rows = read_csv(root / ISIC_CSV, ("image", *CLASS_NAMES), "ham10000 (ISIC 2018 Task 3)")
    if not (root / ISIC_IMAGES).is_dir():
        raise FileNotFoundError(f"ham10000: {root / ISIC_IMAGES} not found (next to {ISIC_CSV})")
    lesion_of: dict[str, str] = {}
    if (root / ISIC_GROUPS).is_file():
        lesion_of = {r["image"]: r["lesion_id"] for r in read_csv(root / ISIC_GROUPS, ("image", "lesion_id"), "ham10000")}
        group_by = "lesion_id"
    elif (root / HAM_CSV).is_file():  # the HAM metadata knows the lesions of the same images
        lesion_of = {r["image_id"]: r["lesion_id"] for r in read_csv(root / HAM_CSV, ("lesion_id", "image_id"), "ham10000")}
        group_by = "lesion_id"
    else:
        group_by = "image"
        warnings.warn(f"ham10000: neither {ISIC_GROUPS} nor {HAM_CSV} in {root}: each image is its own group, "
                      "so images of the same lesion may land on both sides of the split", stacklevel=3)
    scan = scan_images([root / ISIC_IMAGES])
    records, rejected = join_rows(
        rows, scan, scan.stem_index(), ISIC_CSV, file_column="image", file_suffix=".jpg", class_of=_one_hot_label,
        make_record=lambda row, path, dx: _record(path, dx, f"lesion-{lesion_of.get(row['image']) or row['image']}"))
    return records, rejected, group_by


def read_ham10000(*, root=None, test_root=None, seed: int = 0, image_size: int | None = None) -> Source:
    del seed, image_size
    root = require_root(root, "ham10000", f"ROOT/{HAM_CSV} + HAM10000_images_part_*/ or ROOT/{ISIC_CSV} + {ISIC_IMAGES}/")
    no_test_root(test_root, "ham10000")
    has_ham_images = any(d.is_dir() and d.name.lower().startswith("ham10000_images") for d in root.iterdir())
    if (root / HAM_CSV).is_file() and (has_ham_images or not (root / ISIC_CSV).is_file()):
        (records, rejected), layout, group_by = _read_ham(root), "ham10000", "lesion_id"
    elif (root / ISIC_CSV).is_file():
        records, rejected, group_by = _read_isic2018(root)
        layout = "isic2018_task3"
    else:
        raise FileNotFoundError(f"ham10000: {root} has neither {HAM_CSV} (HAM10000 layout) nor {ISIC_CSV} "
                                "(ISIC 2018 Task 3 layout)")
    return Source(name="ham10000", class_names=list(CLASS_NAMES), records=records, rejected=rejected,
                  default_folds=0, default_test_fraction=TEST_FRACTION,
                  options={"root": str(root.resolve()), "layout": layout, "group_by": group_by})
