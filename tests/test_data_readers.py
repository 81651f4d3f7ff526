"""Readers of the official layouts (docs/data.md, "Expected layouts"), each on a fixture tree built here in that layout:
same file names, same CSV columns, a few tiny images per class. Checks labels, groups, parts,
rejections and that no group ever spans two parts."""

from __future__ import annotations

import csv
import json
import tarfile
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from adpm_dist.data.folds import SmallClassWarning
from adpm_dist.data.manifest import load_manifest, verify_shards
from adpm_dist.data.prepare import main, prepare

PAD_COLUMNS = ["patient_id", "lesion_id", "smoke", "drink", "background_father", "background_mother", "age",
               "pesticide", "gender", "skin_cancer_history", "cancer_history", "has_piped_water",
               "has_sewage_system", "fitspatrick", "region", "diameter_1", "diameter_2", "diagnostic", "itch",
               "grew", "hurt", "changed", "bleed", "elevation", "img_id", "biopsed"]
HAM_COLUMNS = ["lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization", "dataset"]
ISIC_COLUMNS = ["image", "MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"]
SCIN_CASE_COLUMNS = ["case_id", "source", "release", "year", "age_group", "sex_at_birth", "fitzpatrick_skin_type",
                     "race_ethnicity_white", "textures_flat", "body_parts_arm", "condition_symptoms_itching",
                     "other_symptoms_fever", "related_category", "condition_duration", "image_1_path",
                     "image_2_path", "image_3_path", "image_1_shot_type", "image_2_shot_type", "image_3_shot_type",
                     "combined_race", "race_ethnicity_two_or_more_after_mitigation"]
SCIN_LABEL_COLUMNS = ["case_id", "dermatologist_gradable_for_skin_condition_1",
                      "dermatologist_gradable_for_skin_condition_2", "dermatologist_gradable_for_skin_condition_3",
                      "dermatologist_skin_condition_on_label_name", "dermatologist_skin_condition_confidence",
                      "weighted_skin_condition_label", "dermatologist_gradable_for_fitzpatrick_skin_type_1",
                      "dermatologist_fitzpatrick_skin_type_label_1", "gradable_for_monk_skin_tone_india",
                      "gradable_for_monk_skin_tone_us", "monk_skin_tone_label_india", "monk_skin_tone_label_us"]
YES, NO = "DEFAULT_YES_IMAGE_QUALITY_SUFFICIENT", "DEFAULT_NO_IMAGE_QUALITY_INSUFFICIENT"


def image(path: Path, seed: int, size=(24, 18)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def write_csv(path: Path, columns: list[str], rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns, restval="")
        w.writeheader()
        w.writerows(rows)


def groups_by_part(manifest) -> dict[str, set[str]]:
    parts = defaultdict(set)
    for r in manifest.index:
        parts[r.group].add(r.part)
    return parts


def assert_groups_never_split(manifest) -> None:
    split = {g: p for g, p in groups_by_part(manifest).items() if len(p) > 1}
    assert not split, f"groups in two parts: {split}"


def assert_accounted(manifest, found: int) -> None:
    inputs = manifest.inputs
    assert inputs == {"found": found, "written": len(manifest.index), "rejected": len(manifest.rejected)}
    assert inputs["found"] == inputs["written"] + inputs["rejected"]
    assert all(r["file"] and r["reason"] for r in manifest.rejected)


# --- PAD-UFES-20 -------------------------------------------------------------------------------------


def make_pad_ufes(root: Path) -> dict:
    """metadata.csv + images/imgs_part_{1,2,3}/PAT_<patient>_<lesion>_<img>.png; patients with several images."""
    plan = {"BCC": 6, "ACK": 5, "NEV": 5, "SEK": 5, "SCC": 5, "MEL": 2}  # patients per class
    rows, img = [], 100
    for ci, (dx, n_patients) in enumerate(plan.items()):
        for p in range(n_patients):
            patient = 1000 + 50 * ci + p
            for j in range(1 + (p % 3)):  # 1-3 images (lesions) per patient
                img += 1
                name = f"PAT_{patient}_{patient * 2 + j}_{img}.png"
                image(root / "images" / f"imgs_part_{1 + img % 3}" / name, img)
                rows.append({"patient_id": f"PAT_{patient}", "lesion_id": str(patient * 2 + j), "smoke": "False",
                             "age": "55", "region": "FACE", "diagnostic": dx, "img_id": name,
                             "biopsed": str(dx != "NEV")})
    write_csv(root / "metadata.csv", PAD_COLUMNS, rows)
    return {"rows": rows}


def test_pad_ufes_official_layout(tmp_path):
    fx = make_pad_ufes(tmp_path / "PAD-UFES-20")
    with pytest.warns(SmallClassWarning, match="'MEL'"):  # 2 patients for 5 folds: warned, still placed
        m = prepare("pad_ufes", tmp_path / "out", root=tmp_path / "PAD-UFES-20", workers=1, progress=False)
    assert m.class_names == ["ACK", "BCC", "MEL", "NEV", "SCC", "SEK"] and m.protocol == "5-fold"
    assert list(m.parts) == [f"fold{k}" for k in range(5)]
    assert len(m.index) == len(fx["rows"]) and m.rejected == []
    assert_accounted(m, found=len(fx["rows"]))
    assert_groups_never_split(m)
    assert {r.group for r in m.index} == {f"patient-{row['patient_id']}" for row in fx["rows"]}
    label_of = {Path(row["img_id"]).stem: row["diagnostic"] for row in fx["rows"]}
    assert all(label_of[r.key] == r.class_name for r in m.index)
    assert sum(m.counts[p]["MEL"] for p in m.parts) == 3  # both MEL patients placed (1 + 2 images)
    assert any("MEL" in w for w in m.warnings)
    for cls in ["BCC", "ACK"]:  # stratified: the big classes reach every fold
        assert all(m.counts[p][cls] > 0 for p in m.parts)
    verify_shards(m)


def test_pad_ufes_metadata_disagreements_are_named(tmp_path):
    """Every mismatch between metadata.csv and the images is a named rejection; the rest still loads."""
    from adpm_dist.data.pad_ufes import read_pad_ufes

    root = tmp_path / "pad"
    rows = make_pad_ufes(root)["rows"]
    image(root / "images" / "imgs_part_1" / "PAT_9_9_9.png", 9)       # on disk, in no row
    image(root / "images" / "imgs_part_2" / "PAT_8_8_8.png", 8)       # its row has an unknown class
    extra = [{**rows[0], "img_id": "PAT_7_7_7.png"},                   # row without its file
             dict(rows[1]),                                            # the same file twice
             {**rows[2], "img_id": "PAT_8_8_8.png", "diagnostic": "XYZ"}]
    write_csv(root / "metadata.csv", PAD_COLUMNS, rows + extra)
    src = read_pad_ufes(root=root)
    reasons = {Path(r["file"]).name: r["reason"] for r in src.rejected}
    assert reasons == {"PAT_7_7_7.png": "listed in metadata.csv but not found on disk",
                       rows[1]["img_id"]: "listed twice in metadata.csv",
                       "PAT_8_8_8.png": "unknown diagnostic 'XYZ'",
                       "PAT_9_9_9.png": "image not listed in metadata.csv"}
    assert len(src.records) == len(rows)


# --- HAM10000 ------------------------------------------------------------------------------------------


HAM_PLAN = {"nv": 12, "mel": 6, "bkl": 6, "bcc": 5, "akiec": 4, "vasc": 3, "df": 3}  # lesions per dx


def make_ham(root: Path, layout: str) -> list[dict]:
    """HAM10000 layout (metadata + 2 image folders) or ISIC 2018 Task 3 (one-hot CSV + input folder)."""
    rows, n = [], 24306
    for dx, n_lesions in HAM_PLAN.items():
        for lesion in range(n_lesions):
            for _ in range(1 + lesion % 2):  # some lesions have 2 images
                rows.append({"lesion_id": f"HAM_{dx}_{lesion:04d}", "image_id": f"ISIC_{n:07d}", "dx": dx})
                n += 1
    if layout == "ham10000":
        for i, r in enumerate(rows):
            image(root / f"HAM10000_images_part_{1 + i % 2}" / f"{r['image_id']}.jpg", i, size=(60, 45))
            r.update(dx_type="histo", age="45.0", sex="male", localization="back", dataset="vidir_modern")
        write_csv(root / "HAM10000_metadata.csv", HAM_COLUMNS, rows)
    else:
        for i, r in enumerate(rows):
            image(root / "ISIC2018_Task3_Training_Input" / f"{r['image_id']}.jpg", i, size=(60, 45))
        (root / "ISIC2018_Task3_Training_Input" / "LICENSE.txt").write_text("CC BY-NC 4.0")
        onehot = [{"image": r["image_id"], **{c: "1.0" if c == r["dx"].upper() else "0.0" for c in ISIC_COLUMNS[1:]}}
                  for r in rows]
        write_csv(root / "ISIC2018_Task3_Training_GroundTruth.csv", ISIC_COLUMNS, onehot)
        write_csv(root / "ISIC2018_Task3_Training_LesionGroupings.csv", ["image", "lesion_id", "diagnosis_confirm_type"],
                  [{"image": r["image_id"], "lesion_id": r["lesion_id"], "diagnosis_confirm_type": "histopathology"}
                   for r in rows])
    return rows


@pytest.mark.parametrize("layout", ["ham10000", "isic2018_task3"])
def test_ham10000_both_layouts_7_3(tmp_path, layout):
    rows = make_ham(tmp_path / "ham", layout)
    m = prepare("ham10000", tmp_path / "out", root=tmp_path / "ham", image_size=32, workers=1, progress=False)
    assert m.class_names == ["MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"]  # ISIC 2018 / DiffMIC order
    assert list(m.parts) == ["train", "test"] and m.protocol == "train:test 70:30"
    assert m.options["layout"] == layout and m.options["group_by"] == "lesion_id"
    assert len(m.index) == len(rows)
    extra = 1 if layout == "isic2018_task3" else 0  # LICENSE.txt in the input folder: accounted, rejected
    assert_accounted(m, found=len(rows) + extra)
    assert_groups_never_split(m)
    test_share = m.num_samples["test"] / len(rows)
    assert 0.2 <= test_share <= 0.4, test_share
    for dx in m.class_names:  # every class on both sides (each has >= 3 lesions)
        assert m.counts["train"][dx] > 0 and m.counts["test"][dx] > 0
    dx_of = {r["image_id"]: r["dx"].upper() for r in rows}
    assert all(dx_of[r.key] == r.class_name for r in m.index)
    with tarfile.open(m.parts["train"][0]) as tar:  # 60x45 stored with shorter side 32, aspect kept
        member = next(n for n in tar.getnames() if n.endswith(".jpg"))
        assert Image.open(tar.extractfile(member)).size == (43, 32)


def test_ham10000_metadata_disagreements_are_named(tmp_path):
    from adpm_dist.data.ham10000 import read_ham10000

    root = tmp_path / "ham"
    rows = make_ham(root, "ham10000")
    image(root / "HAM10000_images_part_1" / "ISIC_9999999.jpg", 1)
    extra = [{**rows[0], "image_id": "ISIC_8888888"}, dict(rows[1]), {**rows[2], "image_id": "ISIC_9999999", "dx": "zz"}]
    write_csv(root / "HAM10000_metadata.csv", HAM_COLUMNS, rows + extra)
    src = read_ham10000(root=root)
    reasons = {Path(r["file"]).name: r["reason"] for r in src.rejected}
    assert reasons == {"ISIC_8888888.jpg": "listed in HAM10000_metadata.csv but not found on disk",
                       f"{rows[1]['image_id']}.jpg": "listed twice in HAM10000_metadata.csv",
                       "ISIC_9999999.jpg": "unknown dx 'zz'"}
    assert len(src.records) == len(rows)


def test_isic2018_ground_truth_not_one_hot_is_named(tmp_path):
    from adpm_dist.data.ham10000 import read_ham10000

    root = tmp_path / "ham"
    make_ham(root, "isic2018_task3")
    gt = root / "ISIC2018_Task3_Training_GroundTruth.csv"
    rows = list(csv.DictReader(gt.open()))
    rows[0].update({c: "1.0" for c in ISIC_COLUMNS[1:3]})  # two classes at once
    write_csv(gt, ISIC_COLUMNS, rows)
    src = read_ham10000(root=root)
    reasons = {Path(r["file"]).name: r["reason"] for r in src.rejected}
    assert reasons == {f"{rows[0]['image']}.jpg": "ground truth is not one-hot over MEL,NV,BCC,AKIEC,BKL,DF,VASC",
                       "LICENSE.txt": "not an image file (.txt)"}
    assert len(src.records) == len(rows) - 1


def test_ham10000_five_fold_option(tmp_path):
    make_ham(tmp_path / "ham", "ham10000")
    m = prepare("ham10000", tmp_path / "out", root=tmp_path / "ham", folds=5, workers=1, progress=False)
    assert list(m.parts) == [f"fold{k}" for k in range(5)] and m.protocol == "5-fold"
    assert_groups_never_split(m)


def test_ham10000_isic_without_lesion_ids_warns(tmp_path):
    make_ham(tmp_path / "ham", "isic2018_task3")
    (tmp_path / "ham" / "ISIC2018_Task3_Training_LesionGroupings.csv").unlink()
    with pytest.warns(UserWarning, match="its own group"):
        m = prepare("ham10000", tmp_path / "out", root=tmp_path / "ham", workers=1, progress=False)
    assert m.options["group_by"] == "image" and any("own group" in w for w in m.warnings)


# --- SCIN ----------------------------------------------------------------------------------------------


def make_scin(root: Path) -> dict:
    """dataset/scin_cases.csv + scin_labels.csv + images/<id>.png, with the label-rule corner cases."""
    data = root / "dataset"
    cases, labels, img = [], [], 0
    expected: dict[str, str] = {}  # image stem -> condition (label) for the kept images

    def case(case_id, n_images, weights, gradable=(YES, "", "")):
        nonlocal img
        paths = []
        for _ in range(n_images):
            img += 1
            stem = f"-{7000000000000000000 + img}"  # SCIN image ids are signed 64-bit integers
            image(data / "images" / f"{stem}.png", img)
            paths.append(f"dataset/images/{stem}.png")
        cases.append({"case_id": case_id, "source": "SCIN", "release": "1.0.0", "year": "2023",
                      **{f"image_{i + 1}_path": p for i, p in enumerate(paths)},
                      **{f"image_{i + 1}_shot_type": "CLOSE_UP" for i in range(len(paths))}})
        labels.append({"case_id": case_id, **dict(zip(SCIN_LABEL_COLUMNS[1:4], gradable)),
                       "weighted_skin_condition_label": weights,
                       "dermatologist_skin_condition_on_label_name": str(list(eval(weights or "{}")))})
        return [Path(p).stem for p in paths]

    plan = {"Eczema": 6, "Urticaria": 5, "Psoriasis": 4, "Acne": 3}  # cases per condition (top-3 keeps 3)
    for ci, (cond, n) in enumerate(plan.items()):
        for i in range(n):
            stems = case(f"{ci + 1}{i:06d}", 1 + i % 3, f"{{'{cond}': 0.6, 'Insect Bite': 0.4}}")
            expected.update(dict.fromkeys(stems, cond))
    ties = case("9000001", 1, "{'Urticaria': 0.5, 'Eczema': 0.5}")  # tie: the first listed wins
    expected.update(dict.fromkeys(ties, "Urticaria"))
    not_gradable = case("9000002", 2, "{'Eczema': 1.0}", gradable=(NO, NO, ""))
    unlabelled = case("9000003", 1, "")
    write_csv(data / "scin_cases.csv", SCIN_CASE_COLUMNS, cases)
    write_csv(data / "scin_labels.csv", SCIN_LABEL_COLUMNS, labels)
    return {"expected": expected, "not_gradable": not_gradable, "unlabelled": unlabelled, "n_images": img}


def test_scin_label_rules_top_k_and_cases(tmp_path):
    fx = make_scin(tmp_path / "scin")
    m = prepare("scin", tmp_path / "out", root=tmp_path / "scin", top_k=3, workers=1, progress=False)
    assert m.class_names == ["Eczema", "Urticaria", "Psoriasis"]  # by image count, head first
    assert m.options["top_k"] == 3 and m.protocol == "5-fold"
    kept = {k: v for k, v in fx["expected"].items() if v in m.class_names}
    assert {r.key: r.class_name for r in m.index} == kept
    reasons = {Path(r["file"]).stem: r["reason"] for r in m.rejected}
    assert all("not gradable" in reasons[s] for s in fx["not_gradable"])
    assert all("no dermatologist label" in reasons[s] for s in fx["unlabelled"])
    acne = [s for s, c in fx["expected"].items() if c == "Acne"]
    assert acne and all("not among the top 3" in reasons[s] for s in acne)
    assert_accounted(m, found=fx["n_images"])
    assert_groups_never_split(m)
    per_case = Counter(r.group for r in m.index)
    assert max(per_case.values()) == 3  # up to 3 images per case, all in one fold


# --- Hyper-Kvasir --------------------------------------------------------------------------------------

HK_CLASSES = {  # (tract, category, class): images
    ("lower-gi-tract", "anatomical-landmarks", "cecum"): 8,
    ("lower-gi-tract", "anatomical-landmarks", "ileum"): 1,  # the real ileum has 9 images: the tail
    ("lower-gi-tract", "pathological-findings", "polyps"): 10,
    ("upper-gi-tract", "anatomical-landmarks", "pylorus"): 7,
    ("upper-gi-tract", "pathological-findings", "esophagitis-a"): 5,
}


def make_hyper_kvasir(root: Path) -> list[dict]:
    base = root / "labeled-images"
    rows, i = [], 0
    for (tract, category, cls), n in HK_CLASSES.items():
        for _ in range(n):
            i += 1
            stem = f"{i:08x}-3c2a-4b1e-9f0d-{i:012x}"
            image(base / tract / category / cls / f"{stem}.jpg", i)
            rows.append({"Video file": stem, "Organ": "Lower GI" if tract.startswith("lower") else "Upper GI",
                         "Finding": cls, "Classification": category})
    write_csv(base / "image-labels.csv", ["Video file", "Organ", "Finding", "Classification"], rows)
    return rows


def test_hyper_kvasir_official_layout(tmp_path):
    rows = make_hyper_kvasir(tmp_path / "hyper-kvasir")
    with pytest.warns(SmallClassWarning, match="'ileum'"):
        m = prepare("hyper_kvasir", tmp_path / "out", root=tmp_path / "hyper-kvasir", workers=1, progress=False)
    assert m.class_names == sorted(c for _, _, c in HK_CLASSES)
    assert len(m.index) == len(rows) and m.protocol == "5-fold"
    assert_accounted(m, found=len(rows))
    assert_groups_never_split(m)
    finding = {r["Video file"]: r["Finding"] for r in rows}
    assert all(finding[r.key] == r.class_name for r in m.index)
    assert sum(m.counts[p]["ileum"] for p in m.parts) == 1


def test_hyper_kvasir_csv_disagreements(tmp_path):
    rows = make_hyper_kvasir(tmp_path / "hk")
    base = tmp_path / "hk" / "labeled-images"
    rows[0]["Finding"] = "polyps"  # a cecum image the CSV calls a polyp
    rows.append({"Video file": "not-on-disk", "Organ": "Lower GI", "Finding": "cecum",
                 "Classification": "anatomical-landmarks"})
    write_csv(base / "image-labels.csv", ["Video file", "Organ", "Finding", "Classification"], rows)
    image(base / "lower-gi-tract" / "anatomical-landmarks" / "cecum" / "unlisted.jpg", 999)
    image(base / "lower-gi-tract" / "stray.jpg", 998)  # not at <tract>/<category>/<class>/
    m = prepare("hyper_kvasir", tmp_path / "out", root=base, workers=1, progress=False)  # ROOT = labeled-images
    reasons = {Path(r["file"]).stem: r["reason"] for r in m.rejected}
    assert "folder 'cecum'" in reasons[rows[0]["Video file"]]
    assert "not found on disk" in reasons["not-on-disk"]
    assert "not listed in image-labels.csv" in reasons["unlisted"]
    assert "<tract>/<category>/<class>" in reasons["stray"]
    assert_accounted(m, found=len(rows) + 2)


# --- common --------------------------------------------------------------------------------------------


def test_cli_on_official_layout_and_verify(tmp_path, capsys):
    make_pad_ufes(tmp_path / "pad")
    out = tmp_path / "out"
    assert main(["--dataset", "pad_ufes", "--root", str(tmp_path / "pad"), "--out", str(out), "--workers", "1",
                 "--quiet", "--verify"]) == 0
    captured = capsys.readouterr()
    assert "verify OK" in captured.out and "inputs: " in captured.out
    assert "WARNING: class 'MEL'" in captured.err
    manifest = json.loads((out / "manifest.json").read_text())
    for key in ("class_names", "counts", "image_size", "seed", "protocol", "parts", "rejected", "inputs"):
        assert key in manifest
    assert main(["--verify", "--out", str(out)]) == 0


@pytest.mark.parametrize("dataset,hint", [("pad_ufes", "metadata.csv"), ("ham10000", "HAM10000_metadata.csv"),
                                          ("scin", "scin_cases.csv"), ("hyper_kvasir", "image-labels.csv")])
def test_wrong_root_names_the_expected_file(tmp_path, capsys, dataset, hint):
    (tmp_path / "empty").mkdir()
    assert main(["--dataset", dataset, "--root", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2
    assert hint in capsys.readouterr().err


def test_missing_csv_column_is_named(tmp_path, capsys):
    make_pad_ufes(tmp_path / "pad")
    text = (tmp_path / "pad" / "metadata.csv").read_text().replace("diagnostic", "diagnosis", 1)
    (tmp_path / "pad" / "metadata.csv").write_text(text)
    assert main(["--dataset", "pad_ufes", "--root", str(tmp_path / "pad"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "metadata.csv" in err and "diagnostic" in err
