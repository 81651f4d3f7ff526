"""PAD-UFES-20 (Pacheco et al. 2020): smartphone images of skin lesions, 6 diagnoses, 2,298 images.

Official layout (the Mendeley archive, extracted):

    ROOT/metadata.csv        patient_id, lesion_id, ..., diagnostic, ..., img_id, biopsed
    ROOT/images/imgs_part_1/PAT_1516_1765_530.png   (also imgs_part_2/, imgs_part_3/; searched recursively)

Label = `diagnostic` (ACK, BCC, MEL, NEV, SCC, SEK); group = `patient_id`, so a patient (who may
have several lesions and images) never sits in two folds. Protocol: 5-fold cross-validation.
"""

from __future__ import annotations

from pathlib import Path

from .layout import column_class, join_rows, no_test_root, read_csv, require_root, scan_images
from .records import Record, Source, safe_key

CLASS_NAMES = ["ACK", "BCC", "MEL", "NEV", "SCC", "SEK"]  # alphabetical, as in the dataset paper
METADATA = "metadata.csv"
COLUMNS = ("patient_id", "lesion_id", "diagnostic", "img_id")


def read_pad_ufes(*, root=None, test_root=None, seed: int = 0, image_size: int | None = None) -> Source:
    del seed, image_size  # parts and resizing are decided later, uniformly for every dataset
    root = require_root(root, "pad_ufes", f"ROOT/{METADATA} + ROOT/images/imgs_part_*/*.png")
    no_test_root(test_root, "pad_ufes")
    rows = read_csv(root / METADATA, COLUMNS, "pad_ufes")
    folders = [root / "images"] if (root / "images").is_dir() else sorted(root.glob("imgs_part_*"))
    if not folders:
        raise FileNotFoundError(f"pad_ufes: no {root / 'images'} folder (nor imgs_part_* folders) under {root}")
    scan = scan_images(folders)
    records, rejected = join_rows(
        rows, scan, scan.by_name, METADATA, file_column="img_id", class_of=column_class("diagnostic", CLASS_NAMES),
        make_record=lambda row, path, dx: Record(key=safe_key(path.stem), label=CLASS_NAMES.index(dx), class_name=dx,
                                                 group=f"patient-{row['patient_id'] or row['lesion_id']}", path=path))
    return Source(name="pad_ufes", class_names=list(CLASS_NAMES), records=records, rejected=rejected,
                  default_folds=5, options={"root": str(root.resolve()), "group_by": "patient_id"})
