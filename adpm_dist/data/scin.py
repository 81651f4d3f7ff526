"""SCIN (Ward et al. 2024, Google): crowd-sourced skin-condition photos, up to 3 images per case.

Official layout (the public bucket `dx-scin-public-data`, copied with its folders):

    ROOT/dataset/scin_cases.csv    case_id, ..., image_1_path, image_2_path, image_3_path, ...
    ROOT/dataset/scin_labels.csv   case_id, dermatologist_gradable_for_skin_condition_{1,2,3},
                                   dermatologist_skin_condition_on_label_name ("['Eczema', ...]"),
                                   weighted_skin_condition_label ("{'Eczema': 0.5, ...}"), ...
    ROOT/dataset/images/-1000600354148496558.png   (image_N_path = "dataset/images/<id>.png")

Label rules (paper section 4.1; the reasons of every dropped image go to the manifest):
- a case is used only if at least one dermatologist marked it gradable
  (`dermatologist_gradable_for_skin_condition_N` starting with "DEFAULT_YES", or YES/TRUE);
- label = the condition with the highest weight in `weighted_skin_condition_label` (ties: the
  first listed); a case without weights has no label and is dropped;
- only the `top_k` most frequent labels (counted in images; ties by name) are kept (paper: 20).
Every image of a case gets the case's label; group = `case_id`. Classes are ordered by frequency
(head first). Protocol: 5-fold cross-validation.
"""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

from .layout import missing, no_test_root, read_csv, require_root, scan_images, unlisted
from .records import Record, Source, safe_key

CASES, LABELS = "scin_cases.csv", "scin_labels.csv"
IMAGE_COLUMNS = ("image_1_path", "image_2_path", "image_3_path")
GRADABLE_COLUMNS = tuple(f"dermatologist_gradable_for_skin_condition_{i}" for i in (1, 2, 3))
WEIGHTS = "weighted_skin_condition_label"
DEFAULT_TOP_K = 20


def is_gradable(label_row: dict) -> bool:
    """At least one dermatologist said the condition can be judged from the images."""
    values = [label_row.get(c, "").upper() for c in GRADABLE_COLUMNS]
    return any(v.startswith("DEFAULT_YES") or v in ("YES", "TRUE") for v in values)


def top_condition(weights: str) -> str | None:
    """The highest-weight condition of a "{'Eczema': 0.5, ...}" string; None if empty or unreadable."""
    try:
        parsed = ast.literal_eval(weights) if weights else {}
    except (ValueError, SyntaxError):
        return None
    if not isinstance(parsed, dict) or not parsed:
        return None
    try:
        return max(parsed, key=lambda c: float(parsed[c]))  # max keeps the first of equal weights
    except (TypeError, ValueError):
        return None


def _dataset_dir(root: Path) -> Path:
    for d in (root / "dataset", root):
        if (d / CASES).is_file():
            return d
    raise FileNotFoundError(f"scin: no {root / 'dataset' / CASES} (nor {root / CASES})")


def _resolve(path_in_csv: str, root: Path, data_dir: Path) -> Path:
    """image_N_path is relative to the bucket root ("dataset/images/x.png"); accept a few copies of it."""
    rel = Path(path_in_csv)
    for candidate in (root / rel, data_dir.parent / rel, data_dir / "images" / rel.name):
        if candidate.is_file():
            return candidate
    return data_dir / "images" / rel.name


def read_scin(*, root=None, test_root=None, seed: int = 0, image_size: int | None = None,
              top_k: int = DEFAULT_TOP_K) -> Source:
    del seed, image_size
    root = require_root(root, "scin", f"ROOT/dataset/{CASES} + {LABELS} + images/")
    no_test_root(test_root, "scin")
    if top_k < 1:
        raise ValueError(f"scin: top_k must be >= 1, got {top_k}")
    data_dir = _dataset_dir(root)
    cases = read_csv(data_dir / CASES, ("case_id", *IMAGE_COLUMNS), "scin")
    labels = {r["case_id"]: r for r in read_csv(data_dir / LABELS, ("case_id", WEIGHTS, GRADABLE_COLUMNS[0]), "scin")}
    scan = scan_images([data_dir / "images"]) if (data_dir / "images").is_dir() else scan_images([])
    rejected = list(scan.rejected)
    used: set[Path] = set()

    # 1. Each image listed by a case, with the case's label or the reason it has none.
    candidates: list[tuple[Path, str, str]] = []  # (path, condition, case_id)
    for case in cases:
        case_id = case["case_id"]
        paths = [(case[c], _resolve(case[c], root, data_dir)) for c in IMAGE_COLUMNS if case[c]]
        if not paths:
            rejected.append({"file": f"{CASES}:case_id={case_id}", "reason": "case has no image path"})
            continue
        label_row = labels.get(case_id)
        condition = top_condition(label_row[WEIGHTS]) if label_row else None
        reason = (f"case {case_id} has no row in {LABELS}" if label_row is None
                  else f"case {case_id} not gradable by any dermatologist" if not is_gradable(label_row)
                  else f"case {case_id} has no dermatologist label" if condition is None else None)
        for listed, p in paths:
            if not p.is_file():
                rejected.append(missing(listed, CASES))
            elif p in used:
                rejected.append({"file": str(p), "reason": f"listed twice in {CASES}"})
            else:
                used.add(p)
                if reason:
                    rejected.append({"file": str(p), "reason": reason})
                else:
                    candidates.append((p, condition, case_id))
    known = {c["case_id"] for c in cases}
    rejected += [{"file": f"{LABELS}:case_id={c}", "reason": f"case not in {CASES}"} for c in labels if c not in known]

    # 2. Keep the top_k most frequent conditions (counted in images).
    freq = Counter(cond for _, cond, _ in candidates)
    class_names = sorted(freq, key=lambda c: (-freq[c], c))[:top_k]
    label_of = {c: i for i, c in enumerate(class_names)}
    records = []
    for path, cond, case_id in candidates:
        if cond in label_of:
            records.append(Record(key=safe_key(path.stem), label=label_of[cond], class_name=cond,
                                  group=f"case-{case_id}", path=path))
        else:
            rejected.append({"file": str(path), "reason": f"condition {cond!r} is not among the top {top_k}"})
    rejected += unlisted(scan, used, CASES)
    return Source(name="scin", class_names=class_names, records=records, rejected=rejected, default_folds=5,
                  options={"root": str(root.resolve()), "top_k": top_k, "group_by": "case_id",
                           "label_rule": "highest weight in weighted_skin_condition_label; gradable cases only"})
