"""The shard writer loses nothing: bad inputs rejected with a reason, odd ones converted to RGB,
found = written + rejected, --verify, atomic writes, idempotent and worker-independent output,
and shards that webdataset itself reads."""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from adpm_dist.data import shards as shards_module
from adpm_dist.data.manifest import load_manifest, verify_shards
from adpm_dist.data.prepare import main, prepare
from adpm_dist.data.tario import read_samples
from test_data_readers import PAD_COLUMNS, write_csv

RED, BLUE = (200, 30, 40), (20, 40, 210)


def _png48(path: Path, rgb16: np.ndarray) -> None:
    """A 16-bit-per-channel RGB PNG, written by hand (PIL cannot write one)."""
    h, w, _ = rgb16.shape
    raw = b"".join(b"\0" + rgb16[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def _jpeg(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=95, **kw)
    return buf.getvalue()


def _halves(w=40, h=30) -> Image.Image:
    a = np.zeros((h, w, 3), np.uint8)
    a[:, : w // 2] = RED
    a[:, w // 2 :] = BLUE
    return Image.fromarray(a)


def make_bad_tree(root: Path) -> dict:
    """A PAD-UFES-20 tree whose images exercise every odd and broken input we know of."""
    imgs = root / "images" / "imgs_part_1"
    imgs.mkdir(parents=True)
    files: dict[str, bytes] = {}
    for i in range(6):  # plain RGB PNGs, stored byte-for-byte
        buf = io.BytesIO()
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (18, 24, 3), dtype=np.uint8)).save(buf, "PNG")
        files[f"PAT_{i}_{i}_{i}.png"] = buf.getvalue()
    good = _jpeg(_halves())
    files["PAT_90_1_truncated.png"] = good[: len(good) // 2]  # truncated JPEG (extensions lie, too)
    files["PAT_91_1_empty.png"] = b""
    files["PAT_92_1_text.png"] = b"this is a text file pretending to be a PNG\n" * 4
    files["PAT_93_1_cmyk.png"] = _jpeg(Image.new("RGB", (20, 16), RED).convert("CMYK"))
    g16 = (np.arange(16 * 20, dtype=np.uint16).reshape(16, 20) * 200)
    buf = io.BytesIO()
    Image.fromarray(g16).save(buf, "PNG")  # mode I;16
    files["PAT_94_1_gray16.png"] = buf.getvalue()
    buf = io.BytesIO()
    Image.fromarray(np.full((16, 20), 77, np.uint8), mode="L").save(buf, "PNG")
    files["PAT_95_1_gray.png"] = buf.getvalue()
    rgba = np.zeros((16, 20, 4), np.uint8)
    rgba[..., :3], rgba[..., 3] = (100, 150, 200), 128
    buf = io.BytesIO()
    Image.fromarray(rgba, mode="RGBA").save(buf, "PNG")
    files["PAT_96_1_rgba.png"] = buf.getvalue()
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": a phone photo held upright
    files["PAT_97_1_rotated.png"] = _jpeg(_halves(), exif=exif)
    files["PAT_98_1_big.png"] = _jpeg(_halves(600, 450))  # resized to shorter side 32
    for name, data in files.items():
        (imgs / name).write_bytes(data)
    _png48(imgs / "PAT_99_1_rgb48.png", np.full((16, 20, 3), (65535, 32896, 0), np.uint16))
    listed = sorted(files) + ["PAT_99_1_rgb48.png", "PAT_89_1_missing.png"]  # the last is not on disk
    (imgs / "PAT_88_1_unlisted.png").write_bytes(files["PAT_0_0_0.png"])  # on disk, not in the CSV
    dx = ["BCC", "ACK", "NEV", "SEK", "SCC", "MEL"]
    rows = [{"patient_id": f"PAT_{i}", "lesion_id": str(i), "diagnostic": dx[i % 6], "img_id": name}
            for i, name in enumerate(listed)]
    write_csv(root / "metadata.csv", PAD_COLUMNS, rows)
    return {"listed": listed, "found": len(listed) + 1}


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad") / "pad"
    fx = make_bad_tree(root)
    out = root.parent / "out"
    m = prepare("pad_ufes", out, root=root, image_size=32, folds=2, workers=1, progress=False)
    return m, fx


def _stored(m, stem: str) -> Image.Image:
    row = next(r for r in m.index if r.key == stem)
    sample = next(s for s in read_samples(m.root / row.shard) if s["__key__"] == stem)
    ext = "jpg" if "jpg" in sample else "png"
    img = Image.open(io.BytesIO(sample[ext]))
    img.load()
    return img


def test_every_input_is_accounted_for(bad):
    m, fx = bad
    assert m.inputs == {"found": fx["found"], "written": len(m.index), "rejected": len(m.rejected)}
    assert m.inputs["found"] == m.inputs["written"] + m.inputs["rejected"] == 18
    reasons = {Path(r["file"]).stem: r["reason"] for r in m.rejected}
    assert set(reasons) == {"PAT_90_1_truncated", "PAT_91_1_empty", "PAT_92_1_text", "PAT_89_1_missing",
                            "PAT_88_1_unlisted"}
    assert "truncated" in reasons["PAT_90_1_truncated"].lower()
    assert "empty file" in reasons["PAT_91_1_empty"]
    assert "cannot identify image" in reasons["PAT_92_1_text"]
    assert "not found on disk" in reasons["PAT_89_1_missing"]
    assert "not listed in metadata.csv" in reasons["PAT_88_1_unlisted"]
    verify_shards(m)


def test_conversions_are_written_as_rgb(bad):
    m, _ = bad
    for stem in ("PAT_93_1_cmyk", "PAT_94_1_gray16", "PAT_95_1_gray", "PAT_96_1_rgba", "PAT_97_1_rotated",
                 "PAT_98_1_big", "PAT_99_1_rgb48", "PAT_0_0_0"):
        assert _stored(m, stem).mode == "RGB", stem
    cmyk = np.asarray(_stored(m, "PAT_93_1_cmyk")).astype(int)
    assert np.abs(cmyk - RED).max() <= 3  # CMYK JPEG back to the red it was made from
    g16 = np.asarray(_stored(m, "PAT_94_1_gray16")).astype(int)
    expected = np.rint(np.arange(16 * 20).reshape(16, 20) * 200 / 257).astype(int)
    assert (g16[..., 0] == expected).all() and (g16[..., 0] == g16[..., 2]).all()  # scaled, not clipped white
    assert (np.asarray(_stored(m, "PAT_95_1_gray")) == 77).all()
    rgba = np.asarray(_stored(m, "PAT_96_1_rgba")).astype(int)  # 50% alpha over black
    assert np.abs(rgba - np.array([100, 150, 200]) * 128 / 255).max() <= 1
    rgb48 = np.asarray(_stored(m, "PAT_99_1_rgb48")).astype(int)
    assert np.abs(rgb48 - [255, 128, 0]).max() <= 1
    rotated = _stored(m, "PAT_97_1_rotated")  # EXIF orientation 6 applied: 40x30 -> 30x40, red on top
    assert rotated.size == (30, 40)
    top, bottom = np.asarray(rotated)[2, 15].astype(int), np.asarray(rotated)[-3, 15].astype(int)
    assert np.abs(top - RED).max() < 20 and np.abs(bottom - BLUE).max() < 20
    assert _stored(m, "PAT_98_1_big").size == (43, 32)  # shorter side 32, aspect 4:3 kept


def test_untouched_images_are_stored_byte_for_byte(bad):
    m, _ = bad
    row = next(r for r in m.index if r.key == "PAT_1_1_1")
    sample = next(s for s in read_samples(m.root / row.shard) if s["__key__"] == "PAT_1_1_1")
    assert sample["png"] == (Path(m.options["root"]) / "images" / "imgs_part_1" / "PAT_1_1_1.png").read_bytes()


def test_workers_and_reruns_give_identical_bytes(bad, tmp_path):
    m, _ = bad
    again = prepare("pad_ufes", tmp_path / "w2", root=m.options["root"], image_size=32, folds=2, workers=2,
                    progress=False)  # a 2-process pool
    assert again.shards == m.shards and again.rejected == m.rejected
    first = json.loads((m.root / "manifest.json").read_text())
    prepare("pad_ufes", tmp_path / "w2", root=m.options["root"], image_size=32, folds=2, workers=1, progress=False,
            overwrite=True)
    second = json.loads((tmp_path / "w2" / "manifest.json").read_text())
    assert {k: v for k, v in first.items() if k != "options"} == {k: v for k, v in second.items() if k != "options"}


def test_verify_detects_tampering(bad, tmp_path, capsys):
    m, _ = bad
    out = tmp_path / "copy"
    prepare("pad_ufes", out, root=m.options["root"], image_size=32, folds=2, workers=1, progress=False)
    assert main(["--verify", "--out", str(out)]) == 0
    shard = sorted(out.glob("*.tar"))[0]
    data = bytearray(shard.read_bytes())
    data[700] ^= 0xFF
    shard.write_bytes(bytes(data))
    assert main(["--verify", "--out", str(out)]) == 1
    assert f"{shard}: sha256" in capsys.readouterr().err
    # a manifest whose counts disagree with the shards (sha256 updated to match the edit)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["parts"]["fold0"]["shards"][0]["sha256"] = shards_module.sha256_file(out / "fold0-000000.tar")
    manifest["parts"]["fold0"]["shards"][0]["num_samples"] += 1
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError):
        verify_shards(load_manifest(out))


def test_failure_midway_leaves_the_previous_set_whole(bad, tmp_path, monkeypatch):
    m, _ = bad
    out = tmp_path / "crash"
    prepare("pad_ufes", out, root=m.options["root"], image_size=32, folds=2, workers=1, progress=False)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real = shards_module._encoded

    def crash_after_three(*args, **kwargs):
        for i, item in enumerate(real(*args, **kwargs)):
            if i == 3:
                raise KeyboardInterrupt
            yield item

    monkeypatch.setattr(shards_module, "_encoded", crash_after_three)
    with pytest.raises(KeyboardInterrupt):
        prepare("pad_ufes", out, root=m.options["root"], image_size=4, folds=2, workers=1, progress=False,
                overwrite=True)
    # the new set was written beside `out` and is gone; the previous set is untouched and complete
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before and not list(tmp_path.glob(".*"))
    verify_shards(load_manifest(out))


def test_webdataset_reads_our_shards(bad):
    import webdataset as wds

    m, _ = bad
    urls = [str(p) for p in m.parts["fold0"]]
    ours = [(s["__key__"], sorted(k for k in s if not k.startswith("__"))) for u in urls for s in read_samples(u)]
    theirs = [(s["__key__"], sorted(k for k in s if not k.startswith("__")))
              for s in wds.WebDataset(urls, shardshuffle=False, empty_check=False)]
    assert ours == theirs and len(ours) == m.num_samples["fold0"]


def test_verify_rejects_a_group_in_two_parts(bad, tmp_path):
    m, _ = bad
    out = tmp_path / "groups"
    prepare("pad_ufes", out, root=m.options["root"], image_size=32, folds=2, workers=1, progress=False)
    lines = (out / "index.csv").read_text().splitlines()
    header, rows = lines[0].split(","), [line.split(",") for line in lines[1:]]
    g, p = header.index("group"), header.index("part")
    other = next(r for r in rows if r[p] != rows[0][p])
    other[g] = rows[0][g]  # the same patient now appears in both folds
    (out / "index.csv").write_text("\n".join([lines[0]] + [",".join(r) for r in rows]) + "\n")
    with pytest.raises(ValueError, match="is in parts"):
        verify_shards(load_manifest(out))
