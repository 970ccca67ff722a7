import multiprocessing
import os
import pickle

import cv2
import numpy as np
import pytest

import PromptIQA.data.cache as cache_module
from PromptIQA.data.cache import BadImage, DirectImages, ImageCache, open_images
from PromptIQA.data.image import read_image
from PromptIQA.utils.errors import UserError

SIZE = 32


def write_images(folder, count, seed=0):
    """Small real image files: colour JPEGs and PNGs, and a grey PNG."""
    rng = np.random.default_rng(seed)
    folder.mkdir(exist_ok=True)
    paths = []
    for i in range(count):
        shape = (30 + i, 40, 3) if i % 3 else (30 + i, 40)
        image = rng.integers(0, 256, shape, dtype=np.uint8)
        path = folder / (f"{i:03d}.jpg" if i % 2 else f"{i:03d}.png")
        assert cv2.imwrite(str(path), image)
        paths.append(str(path))
    return paths


def corrupt(path):
    with open(path, "wb") as f:
        f.write(b"this is not an image")


def refuse_to_decode(*_):
    raise AssertionError("an existing cache was decoded again")


def test_frames_are_identical_to_read_image(tmp_path):
    paths = write_images(tmp_path / "images", 7)
    cache = ImageCache(paths, tmp_path / "cache", size=SIZE, workers=2)
    assert len(cache) == 7 and cache.bad == []
    for i, path in enumerate(paths):
        frame = cache[i]
        assert frame.dtype == np.uint8 and frame.shape == (SIZE, SIZE, 3)
        np.testing.assert_array_equal(frame, read_image(path, SIZE))


def test_second_construction_reuses_the_file(tmp_path, monkeypatch):
    paths = write_images(tmp_path / "images", 5)
    first = ImageCache(paths, tmp_path / "cache", size=SIZE)
    stored = first.directory / "images.npy"
    mtime = stored.stat().st_mtime_ns
    monkeypatch.setattr(cache_module, "read_image", refuse_to_decode)
    second = ImageCache(paths, tmp_path / "cache", size=SIZE)
    assert second.directory == first.directory and stored.stat().st_mtime_ns == mtime
    np.testing.assert_array_equal(second[4], first[4])


def test_key_changes_with_a_file_or_the_size(tmp_path):
    paths = write_images(tmp_path / "images", 4)
    before = ImageCache(paths, tmp_path / "cache", size=SIZE)
    assert ImageCache(paths, tmp_path / "cache", size=SIZE + 8).directory != before.directory
    cv2.imwrite(paths[2], np.full((50, 60, 3), 200, np.uint8))
    os.utime(paths[2], ns=(1, 1))  # a different mtime even on coarse-clock file systems
    after = ImageCache(paths, tmp_path / "cache", size=SIZE)
    assert after.directory != before.directory
    np.testing.assert_array_equal(after[2], read_image(paths[2], SIZE))
    np.testing.assert_array_equal(after[1], before[1])


def test_bad_images_fail_with_one_listing(tmp_path):
    paths = write_images(tmp_path / "images", 14)
    for path in paths[:12]:
        corrupt(path)
    with pytest.raises(UserError) as raised:
        ImageCache(paths, tmp_path / "cache", size=SIZE, on_bad_image="fail")
    message = str(raised.value)
    assert message.startswith("12 of 14 images cannot be read")
    assert f"{paths[0]}: not a readable image" in message and "and 2 more" in message
    assert paths[11] not in message


def test_bad_images_are_skipped_and_reported(tmp_path):
    paths = write_images(tmp_path / "images", 4)
    corrupt(paths[1])
    missing = str(tmp_path / "images" / "gone.png")
    cache = ImageCache(paths + [missing], tmp_path / "cache", size=SIZE, on_bad_image="skip")
    assert [(b.index, b.path) for b in cache.bad] == [(1, paths[1]), (4, missing)]
    assert "no such image file" in cache.bad[1].reason
    assert not cache[1].any()
    np.testing.assert_array_equal(cache[2], read_image(paths[2], SIZE))
    reopened = ImageCache(paths + [missing], tmp_path / "cache", size=SIZE, on_bad_image="skip")
    assert reopened.bad == cache.bad and all(isinstance(b, BadImage) for b in reopened.bad)
    with pytest.raises(UserError, match="2 of 5 images"):
        ImageCache(paths + [missing], tmp_path / "cache", size=SIZE, on_bad_image="fail")


def test_interrupted_build_leaves_no_cache(tmp_path, monkeypatch):
    paths = write_images(tmp_path / "images", 6)
    calls = []

    def interrupted(path, size):
        calls.append(path)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return read_image(path, size)

    monkeypatch.setattr(cache_module, "read_image", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ImageCache(paths, tmp_path / "cache", size=SIZE, workers=1)
    assert list((tmp_path / "cache").iterdir()) == []
    monkeypatch.undo()
    cache = ImageCache(paths, tmp_path / "cache", size=SIZE)
    np.testing.assert_array_equal(cache[5], read_image(paths[5], SIZE))


def build_then_die(paths, cache_dir):
    def die(path, size):
        os._exit(3)

    cache_module.read_image = die
    ImageCache(paths, cache_dir, size=SIZE, workers=1)


def test_killed_build_is_not_mistaken_for_a_cache(tmp_path):
    paths = write_images(tmp_path / "images", 4)
    child = multiprocessing.get_context("fork").Process(target=build_then_die, args=(paths, tmp_path / "cache"))
    child.start()
    child.join(30)
    assert child.exitcode == 3
    leftovers = list((tmp_path / "cache").iterdir())
    assert len(leftovers) == 1 and leftovers[0].name.startswith(".") and leftovers[0].name.endswith(".partial")
    cache = ImageCache(paths, tmp_path / "cache", size=SIZE)
    assert cache.directory.name == leftovers[0].name[1:].split(".")[0]
    np.testing.assert_array_equal(cache[0], read_image(paths[0], SIZE))


def test_pickled_cache_reopens_the_file(tmp_path):
    paths = write_images(tmp_path / "images", 3)
    cache = ImageCache(paths, tmp_path / "cache", size=SIZE)
    cache[0]
    state = pickle.dumps(cache)
    assert len(state) < 3 * SIZE * SIZE * 3
    np.testing.assert_array_equal(pickle.loads(state)[2], cache[2])


def test_direct_images_and_the_switch(tmp_path):
    paths = write_images(tmp_path / "images", 3)
    direct = open_images(paths, SIZE, cache_dir=None)
    assert isinstance(direct, DirectImages) and len(direct) == 3 and direct.bad == []
    np.testing.assert_array_equal(direct[1], read_image(paths[1], SIZE))
    cached = open_images(paths, SIZE, cache_dir=tmp_path / "cache")
    assert isinstance(cached, ImageCache)
    np.testing.assert_array_equal(cached[1], direct[1])


def test_unknown_bad_image_policy_is_an_error(tmp_path):
    with pytest.raises(UserError, match="on_bad_image"):
        ImageCache([], tmp_path / "cache", on_bad_image="ignore")
