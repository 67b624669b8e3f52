"""Bad images in an image folder: the five kinds of broken file are skipped and listed (or stop the run
under ``on_bad_image=fail``), the valid oddities decode to the right pixels, and ``simlab verify-data``
reports the same five files."""

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from simlab.cli import main
from simlab.config import apply_overrides
from simlab.data import BadImageError, ImageFolderDataset, decode_image
from simlab.presets import preset
from simlab.train import BadImageLog, pretrain

BAD = ("bad_bomb.png", "bad_cut.jpg", "bad_empty.jpg", "bad_text.jpg", "bad_truncated.png")


def _noise(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _cut(path: Path, fraction: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * fraction)])


def _bomb_png(path: Path, side: int) -> None:
    """A PNG whose header declares ``side`` x ``side`` pixels (its one data chunk is tiny)."""
    Image.new("L", (1, 1)).save(path)
    data = bytearray(path.read_bytes())
    ihdr = data.index(b"IHDR")
    data[ihdr + 4:ihdr + 12] = struct.pack(">II", side, side)
    data[ihdr + 17:ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(data[ihdr:ihdr + 17])))  # a valid chunk CRC
    path.write_bytes(bytes(data))


# the valid oddities and the pixels each must decode to (H, W, 3 uint8), built without simlab's decoder
def _oddities(folder: Path) -> dict:
    expected = {}
    Image.fromarray(np.array([[[200, 10, 30]]], dtype=np.uint8)).save(folder / "odd_1x1.png")
    expected["odd_1x1.png"] = np.array([[[200, 10, 30]]], dtype=np.uint8)

    levels = np.tile(np.arange(0, 256, 16, dtype=np.uint16), (4, 1))  # (4, 16) 8-bit levels
    Image.fromarray(levels * 257).save(folder / "odd_16bit.png")  # stored as 16-bit greyscale
    expected["odd_16bit.png"] = np.repeat(levels.astype(np.uint8)[..., None], 3, axis=2)

    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(folder / "odd_cmyk.jpg", quality=95)  # pure red
    expected["odd_cmyk.jpg"] = np.broadcast_to(np.array([255, 0, 0], dtype=np.uint8), (16, 16, 3))

    palette = np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0], [10, 20, 250]], dtype=np.uint8)
    index = np.random.default_rng(1).integers(0, 4, (12, 10), dtype=np.uint8)
    im = Image.fromarray(index, mode="P")
    im.putpalette(palette.reshape(-1).tolist())
    im.save(folder / "odd_palette.png")
    expected["odd_palette.png"] = palette[index]

    grey = np.random.default_rng(2).integers(0, 256, (9, 11), dtype=np.uint8)
    Image.fromarray(grey).save(folder / "odd_grey.png")
    expected["odd_grey.png"] = np.repeat(grey[..., None], 3, axis=2)

    # upright: 16 high, 32 wide, a white top-left quadrant; stored turned a quarter to the left with
    # EXIF orientation 6 ("rotate 90 degrees clockwise to display")
    upright = np.zeros((16, 32, 3), dtype=np.uint8)
    upright[:8, :16] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.rot90(upright, 1).copy()).save(folder / "odd_exif.jpg", exif=exif, quality=95)
    expected["odd_exif.jpg"] = upright
    return expected


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    for i in range(8):
        Image.fromarray(_noise(24, 20, i)).save(root / f"img_{i}.{'png' if i % 2 else 'jpg'}")
    expected = _oddities(root)
    Image.fromarray(_noise(64, 64, 10)).save(root / "bad_cut.jpg", quality=95)
    _cut(root / "bad_cut.jpg", 0.5)
    Image.fromarray(_noise(64, 64, 11)).save(root / "bad_truncated.png")
    _cut(root / "bad_truncated.png", 0.6)
    (root / "bad_empty.jpg").write_bytes(b"")
    (root / "bad_text.jpg").write_text("this is a text file, not a JPEG\n")
    _bomb_png(root / "bad_bomb.png", int((2 * Image.MAX_IMAGE_PIXELS) ** 0.5) + 100)
    return root, expected


def test_valid_oddities_decode_to_the_right_pixels(folder):
    root, expected = folder
    for name, want in expected.items():
        got = decode_image(root / name)
        assert got.dtype == torch.uint8 and got.shape == (3, *want.shape[:2]), name
        tolerance = 12 if name.endswith(".jpg") else 0  # JPEG is lossy
        diff = (got.permute(1, 2, 0).int() - torch.from_numpy(np.ascontiguousarray(want)).int()).abs().max()
        assert diff <= tolerance, (name, int(diff))


@pytest.mark.parametrize("name", BAD)
def test_each_bad_file_raises_one_clear_error_naming_it(folder, name):
    root, _ = folder
    with pytest.raises(BadImageError) as err:
        decode_image(root / name)
    assert str(root / name) in str(err.value)
    if name == "bad_bomb.png":
        assert "decompression bomb" in str(err.value)


def test_verify_data_reports_exactly_the_five_bad_files(folder, capsys):
    root, _ = folder
    assert [Path(p).name for p, _ in ImageFolderDataset(str(root)).verify()] == list(BAD)
    assert main(["verify-data", "--dataset", "imagefolder", "--data-root", str(root), "--quiet"]) == 1
    out = capsys.readouterr().out
    listed = [Path(line.split("\t")[0][len("bad: "):]).name for line in out.splitlines() if line.startswith("bad: ")]
    assert listed == list(BAD)
    assert "19 files, 5 bad" in out


def _run_config(root: Path, *overrides):
    return apply_overrides(preset("tiny"), ["dataset=imagefolder", f"data_root={root}", "batch_size=4",
                                            "steps=16", "checkpoint_every=8", *overrides])


@pytest.mark.parametrize("workers", [0, 2])
def test_a_run_skips_exactly_the_five_bad_files_lists_them_and_goes_on(folder, tmp_path, workers):
    root, _ = folder
    messages = []
    pretrain(_run_config(root, f"num_workers={workers}"), tmp_path / "run", log=messages.append)
    assert (tmp_path / "run" / "COMPLETE").exists()
    listed = BadImageLog.read(tmp_path / "run")
    assert sorted(Path(p).name for p in listed) == list(BAD)
    assert sum("skipped a bad image" in m for m in messages) == 5


def test_the_fail_policy_stops_with_an_error_naming_the_first_bad_file(folder, tmp_path, capsys):
    root, _ = folder
    code = main(["pretrain", "--preset", "tiny", "--dataset", "imagefolder", "--data-root", str(root),
                 "--out", str(tmp_path / "run"), "--steps", "16", "--set", "batch_size=4",
                 "--set", "on_bad_image=fail"])
    assert code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err  # one line
    assert "error" in err and sum(str(root / name) in err for name in BAD) == 1
    # it failed before recording anything, so nothing is left behind: no config.json, no empty metrics
    assert not (tmp_path / "run").exists()
