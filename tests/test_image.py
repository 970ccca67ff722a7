"""Pre-processing: the published pipeline, odd image kinds converted, broken files refused."""
from __future__ import annotations

import builtins
import os
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import write_image
from PIL import Image

from PromptIQA.data.cache import open_images
from PromptIQA.data.image import ImageError, read_image, to_tensor
from PromptIQA.utils.errors import UserError


def test_read_image_is_opencv_cubic_resize_to_rgb(tmp_path):
    path = write_image(tmp_path / "a.png", size=(300, 500))
    bgr = cv2.imread(str(path))
    expected = cv2.resize(bgr, (224, 224), interpolation=cv2.INTER_CUBIC)[:, :, ::-1]
    np.testing.assert_array_equal(read_image(path), expected)


def test_to_tensor_normalises_to_minus_one_one():
    x = to_tensor(np.array([[[0, 255, 51]]], dtype=np.uint8))
    assert x.shape == (3, 1, 1)
    np.testing.assert_allclose(x.flatten().numpy(), [-1.0, 1.0, (51 / 255 - 0.5) / 0.5], rtol=1e-6)


def _write_pil(path, array, mode=None, **save):
    Image.fromarray(array, mode=mode).save(path, **save)
    return path


@pytest.fixture
def rgb():
    return np.random.default_rng(0).integers(0, 256, size=(30, 40, 3), dtype=np.uint8)


def test_grey_image_becomes_three_equal_channels(tmp_path, rgb):
    img = read_image(_write_pil(tmp_path / "g.png", rgb[:, :, 0]))
    assert img.shape == (224, 224, 3)
    assert (img[..., 0] == img[..., 1]).all() and (img[..., 1] == img[..., 2]).all()


def test_alpha_channel_is_dropped(tmp_path, rgb):
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 7, np.uint8)])
    with_alpha = read_image(_write_pil(tmp_path / "a.png", rgba, "RGBA"))
    np.testing.assert_array_equal(with_alpha, read_image(_write_pil(tmp_path / "b.png", rgb)))


def test_sixteen_bit_image_is_scaled_to_eight_bits(tmp_path, rgb):
    path = tmp_path / "16.png"
    cv2.imwrite(str(path), rgb.astype(np.uint16) * 257)
    np.testing.assert_array_equal(read_image(path), read_image(_write_pil(tmp_path / "8.png", rgb[:, :, ::-1].copy())))


def test_palette_image_is_decoded_to_colour(tmp_path, rgb):
    path = tmp_path / "p.png"
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=16).save(path)
    img = read_image(path)
    assert img.shape == (224, 224, 3) and img.std() > 0


def test_bmp_and_jpeg_are_read(tmp_path):
    for suffix in (".bmp", ".jpg"):
        assert read_image(write_image(tmp_path / f"x{suffix}")).shape == (224, 224, 3)


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


def _truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda d: d / "missing.png", "no such image file"),
        (lambda d: _write(d / "empty.png", b""), "empty"),
        (lambda d: _write(d / "text.png", b"not an image"), "not a readable image"),
        (lambda d: _truncate(write_image(d / "cut.jpg", size=(64, 64))), "truncated"),
        (lambda d: _truncate(write_image(d / "cut.png", size=(64, 64))), "truncated"),
    ],
    ids=["missing", "zero-byte", "non-image", "truncated-jpeg", "truncated-png"],
)
def test_broken_files_raise_an_error_naming_the_file(tmp_path, make, reason):
    path = make(tmp_path)
    with pytest.raises(ImageError, match=reason) as err:
        read_image(path)
    assert str(path) in str(err.value)


# ---- hostile and unreadable files --------------------------------------------------------------------

def _png_declaring(path, width: int, height: int):
    """A valid 1x1 PNG whose header claims width x height: what a decompression bomb looks like before
    decoding (the real 30000x30000 kind is under 1 MB of compressed zeros)."""
    _write_pil(path, np.zeros((1, 1), np.uint8))
    data = bytearray(path.read_bytes())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))  # the IHDR chunk's checksum
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("side", [30_000, 100_000])
def test_decompression_bomb_is_refused_from_its_header(tmp_path, monkeypatch, side):
    path = _png_declaring(tmp_path / "bomb.png", side, side)
    monkeypatch.delenv("PROMPTIQA_MAX_IMAGE_PIXELS", raising=False)
    with pytest.raises(ImageError, match=f"{side}x{side} = {side * side:,} pixels.*limit of 100,000,000") as err:
        read_image(path)
    assert str(path) in str(err.value) and "PROMPTIQA_MAX_IMAGE_PIXELS" in str(err.value)


def test_pixel_limit_is_set_by_the_environment(tmp_path, monkeypatch):
    path = write_image(tmp_path / "a.png", size=(50, 80))  # 4000 pixels
    monkeypatch.setenv("PROMPTIQA_MAX_IMAGE_PIXELS", "3999")
    with pytest.raises(ImageError, match="80x50 = 4,000 pixels, more than the limit of 3,999"):
        read_image(path)
    monkeypatch.setenv("PROMPTIQA_MAX_IMAGE_PIXELS", "4000")
    assert read_image(path).shape == (224, 224, 3)
    monkeypatch.setenv("PROMPTIQA_MAX_IMAGE_PIXELS", "lots")
    with pytest.raises(UserError, match="PROMPTIQA_MAX_IMAGE_PIXELS='lots'.*whole number"):
        read_image(path)


def test_raising_the_limit_rebuilds_a_cache_that_refused_an_image(tmp_path, monkeypatch):
    paths = [write_image(tmp_path / "small.png", size=(10, 10)), write_image(tmp_path / "big.png", size=(50, 80))]
    monkeypatch.setenv("PROMPTIQA_MAX_IMAGE_PIXELS", "1000")
    refused = open_images(paths, 32, tmp_path / "cache", on_bad_image="skip")
    assert [b.path for b in refused.bad] == [str(paths[1])] and "PROMPTIQA_MAX_IMAGE_PIXELS" in refused.bad[0].reason
    monkeypatch.setenv("PROMPTIQA_MAX_IMAGE_PIXELS", "4000")
    assert open_images(paths, 32, tmp_path / "cache").bad == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root may read any file")
def test_image_without_read_permission_is_named(tmp_path):
    path = write_image(tmp_path / "secret.png")
    path.chmod(0)
    with pytest.raises(ImageError, match="permission denied") as err:
        read_image(path)
    assert str(path) in str(err.value)


def test_permission_error_while_reading_is_named(tmp_path, monkeypatch):
    path = write_image(tmp_path / "secret.png")
    real_open = builtins.open

    def refuse(file, *args, **kwargs):
        if Path(file) == path:
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", refuse)
    with pytest.raises(ImageError, match="permission denied.*chmod a\\+r") as err:
        read_image(path)
    assert str(path) in str(err.value)
