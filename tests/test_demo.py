import hashlib
import json
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import pytest

import PromptIQA.data.demo as demo
from PromptIQA.data.dataset_info import check_datasets, load_dataset_info
from PromptIQA.data.datasets import read_dataset_as
from PromptIQA.data.prompts import read_prompt_file
from PromptIQA.data.split import split_records

# Tests build the demo from two crops of four photos; the layout and labels do not depend on how many.
PHOTOS = demo.REFERENCES[:4]
CROPS = 2
READERS = {"demo_kadid": "kadid", "demo_csiq": "csiq", "demo_brightness": "csv"}
QUALITY_TAGS = [d.csiq_tag for d in demo.QUALITY_DISTORTIONS]


def images_per_photo(dataset: str) -> int:
    return len(demo.LAYOUTS[dataset].distortions) * 5 * CROPS


def tree(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every published file (not the lock)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != ".lock"}


def build_small(root: Path) -> Path:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(demo, "REFERENCES", PHOTOS)
        patch.setattr(demo, "CROPS_PER_PHOTO", CROPS)
        demo.build_demo(root)
    return root


def reference_of(dataset: str, record_path: str) -> Path:
    """The undistorted crop a demo image was made from, by the dataset's file naming."""
    path = Path(record_path)
    if dataset == "demo_csiq":
        unit, _, _, crop, _ = path.name.split(".")
        return path.parent.parent / "src_imgs" / f"{unit}.{crop}.png"
    unit, *_, crop = path.stem.split("_")
    folder = path.parent if dataset == "demo_kadid" else path.parent.parent / "references"
    return folder / f"{unit}_{crop}.png"


def kind_and_level(dataset: str, record_path: str) -> tuple[str, int]:
    name = Path(record_path).name
    if dataset == "demo_csiq":
        _, tag, level, _, _ = name.split(".")
        return tag, int(level)
    _, kadid_id, level, _ = Path(name).stem.split("_")
    return next(d.csiq_tag for d in demo.DISTORTIONS if d.kadid_id == int(kadid_id)), int(level)


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory) -> Path:
    return build_small(tmp_path_factory.mktemp("demo"))


@pytest.fixture(scope="session")
def rebuilt_root(tmp_path_factory) -> Path:
    """A second build, into a folder that a killed build left with a partial copy and no manifest."""
    root = tmp_path_factory.mktemp("rebuilt")
    (root / ".partial-killed").mkdir()
    (root / ".partial-killed" / "half-written.png").write_bytes(b"\x89PNG")
    (root / "demo_kadid" / "images").mkdir(parents=True)
    (root / "demo_kadid" / "dmos.csv").write_text("dist_img,ref_img,dmos,var\n")
    return build_small(root)


@pytest.fixture(scope="session")
def records(demo_root):
    return {name: read_dataset_as(name, reader, demo_root / name) for name, reader in READERS.items()}


def test_build_returns_dataset_folders(demo_root):
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(demo, "_build", lambda root: pytest.fail("the demo was built already"))
        paths = demo.build_demo(demo_root)
    assert paths == {name: str(demo_root / name) for name in READERS}
    assert (demo_root / "demo_kadid" / "dmos.csv").read_text().startswith("dist_img,ref_img,dmos,var\n")
    assert (demo_root / "demo_csiq" / "csiq_label.txt").is_file()
    assert (demo_root / "demo_brightness" / "labels.csv").read_text().startswith("path,score,unit\n")


def test_layouts_name_files_as_the_real_datasets(demo_root):
    kadid = sorted(p.name for p in (demo_root / "demo_kadid" / "images").iterdir())
    assert kadid[:3] == ["I01_01_01_c0.png", "I01_01_01_c1.png", "I01_01_02_c0.png"]
    assert {"I04_11_05_c1.png", "I04_c0.png", "I04_c1.png"} <= set(kadid)
    csiq = {p.name for p in (demo_root / "demo_csiq" / "dst_imgs_all").iterdir()}
    assert {f"I02.{tag}.{level}.c1.png" for tag in QUALITY_TAGS for level in range(1, 6)} <= csiq
    assert (demo_root / "demo_csiq" / "src_imgs" / "I02.c1.png").is_file()
    assert (demo_root / "demo_brightness" / "images" / "I03_17_01_c0.png").is_file()


def test_images_are_square_colour(records):
    for found in records.values():
        image = cv2.imread(found[0].path, cv2.IMREAD_UNCHANGED)
        assert image.shape == (demo.SIZE, demo.SIZE, 3)


def test_build_is_deterministic(demo_root, rebuilt_root):
    assert tree(demo_root) == tree(rebuilt_root)


def test_killed_build_is_redone(rebuilt_root):
    assert json.loads((rebuilt_root / demo.MANIFEST).read_text())["version"] == demo.DEMO_VERSION
    assert not list(rebuilt_root.glob(".partial-*"))


def test_interrupted_build_leaves_no_manifest(tmp_path, monkeypatch):
    written, write_png = [], demo._write_png

    def write_then_fail(path, image):
        if len(written) == 30:
            raise KeyboardInterrupt
        written.append(path)
        write_png(path, image)

    monkeypatch.setattr(demo, "_write_png", write_then_fail)
    with pytest.raises(KeyboardInterrupt):
        demo.build_demo(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock"]

    monkeypatch.setattr(demo, "_build", lambda root: written.append("rebuilt"))
    demo.build_demo(tmp_path)
    assert written[-1] == "rebuilt"


def test_built_demo_is_not_rebuilt_unless_forced(demo_root, monkeypatch):
    builds = []
    monkeypatch.setattr(demo, "_build", builds.append)
    demo.build_demo(demo_root)
    assert builds == []
    demo.build_demo(demo_root, force=True)
    assert builds == [demo_root]


def test_outdated_manifest_is_rebuilt(tmp_path, monkeypatch):
    for name in READERS:
        (tmp_path / name).mkdir()
    (tmp_path / demo.MANIFEST).write_text(json.dumps({"version": demo.DEMO_VERSION - 1}))
    builds = []
    monkeypatch.setattr(demo, "_build", builds.append)
    demo.build_demo(tmp_path)
    assert builds == [tmp_path]


def test_readers_load_every_dataset_with_photos_as_units(records):
    for name, found in records.items():
        assert len(found) == len(PHOTOS) * images_per_photo(name)
        assert len({r.unit for r in found}) == len(PHOTOS)
        assert all(0 <= r.label <= 1 for r in found)
        assert all(Path(r.path).is_file() and reference_of(name, r.path).is_file() for r in found)


@pytest.mark.parametrize("dataset, lower_is_better", [("demo_kadid", False), ("demo_csiq", True)])
def test_quality_labels_are_ssim_averaged_by_distortion_and_level(records, dataset, lower_is_better):
    ssim, labels = defaultdict(list), defaultdict(set)
    for record in records[dataset]:
        reference, image = (cv2.imread(str(p)) for p in (reference_of(dataset, record.path), record.path))
        key = kind_and_level(dataset, record.path)
        ssim[key].append(demo.ssim_quality(reference, image))
        labels[key].add(record.label)
    assert len(ssim) == len(QUALITY_TAGS) * 5
    for key, values in ssim.items():
        q = np.mean(values)
        assert len(labels[key]) == 1, key
        assert labels[key].pop() == pytest.approx(1 - q if lower_is_better else q, abs=1e-6), key


def test_brightness_labels_are_mean_luma(records):
    for record in records["demo_brightness"][::5]:
        blue, green, red = np.moveaxis(cv2.imread(record.path).astype(np.float64), -1, 0)
        luma = (0.299 * red + 0.587 * green + 0.114 * blue).mean() / 255
        assert record.label == pytest.approx(luma, abs=2e-3)


def mean_label_by_level(found, dataset: str, tag: str) -> list[float]:
    by_level = defaultdict(list)
    for record in found:
        kind, level = kind_and_level(dataset, record.path)
        if kind == tag:
            by_level[level].append(record.label)
    return [float(np.mean(by_level[level])) for level in range(1, 6)]


@pytest.mark.parametrize("tag", QUALITY_TAGS)
def test_quality_falls_with_level(records, tag):
    means = mean_label_by_level(records["demo_kadid"], "demo_kadid", tag)
    assert all(a > b for a, b in zip(means, means[1:])), means


@pytest.mark.parametrize("tag, brighter", [("brighten", True), ("darken", False)])
def test_brightness_moves_with_the_exposure_distortions(records, tag, brighter):
    means = mean_label_by_level(records["demo_brightness"], "demo_brightness", tag)
    assert all((b > a) == brighter for a, b in zip(means, means[1:])), means


def test_labels_spread_over_the_range(records):
    quality = {r.label for r in records["demo_kadid"]}
    assert len(quality) == len(QUALITY_TAGS) * 5 and min(quality) < 0.5 and max(quality) > 0.9
    brightness = [r.label for r in records["demo_brightness"]]
    assert min(brightness) < 0.2 and max(brightness) > 0.75


def test_requirements_rank_the_images_differently(records):
    # The same photos, crop numbers, distortions and levels, in the same order (the crops differ).
    quality = np.array([r.label for r in records["demo_kadid"]])
    bright = np.array([r.label for r in records["demo_brightness"]
                       if kind_and_level("demo_brightness", r.path)[0] in QUALITY_TAGS])
    assert abs(np.corrcoef(np.argsort(np.argsort(quality)), np.argsort(np.argsort(bright)))[0, 1]) < 0.5


def test_each_dataset_has_its_own_crops(demo_root):
    crops = [set(tree(demo_root / name / folder).values())
             for name, folder in (("demo_kadid", "images"), ("demo_csiq", "src_imgs"), ("demo_brightness", "references"))]
    assert all(not a & b for i, a in enumerate(crops) for b in crops[i + 1:])


@pytest.mark.parametrize("seed", range(3))
def test_one_seed_splits_all_datasets_by_the_same_photos(records, seed):
    splits = {}
    for name, found in records.items():
        train, test = split_records(found, seed)
        train_photos = {Path(r.path).name[:3] for r in train}
        test_photos = {Path(r.path).name[:3] for r in test}
        assert train and test and not train_photos & test_photos
        splits[name] = test_photos
    assert len({frozenset(s) for s in splits.values()}) == 1


def test_dataset_info_entries_load(demo_root, tmp_path, monkeypatch):
    monkeypatch.setattr(demo, "_build", lambda root: pytest.fail("the demo was built already"))
    info = demo.demo_dataset_info(demo_root)
    assert info == {name: {"root": str(demo_root / name), "reader": reader} for name, reader in READERS.items()}
    (tmp_path / "dataset_info.json").write_text(json.dumps(info))
    found = check_datasets(list(info), load_dataset_info(tmp_path / "dataset_info.json"))
    assert {name: len(r) for name, r in found.items()} == {name: len(PHOTOS) * images_per_photo(name) for name in READERS}


def test_unseen_check_uses_new_photos_and_distortions(tmp_path):
    paths = demo.build_unseen_check(tmp_path, photos=("chelsea",), crops=2, prompt_num=10)
    assert not set(demo.UNSEEN_PHOTOS) & set(demo.REFERENCES)
    assert not {d.kadid_id for d in demo.UNSEEN_DISTORTIONS} & {d.kadid_id for d in demo.DISTORTIONS}
    prompts = read_prompt_file(paths["prompts"])
    queries = sorted(p.name for p in paths["images"].iterdir())
    rows = paths["labels"].read_text().splitlines()
    assert len(prompts.scores) == 10 and len(queries) == 2 * len(demo.UNSEEN_DISTORTIONS) * 5 - 10
    assert rows[0] == "path,score" and sorted(Path(r.split(",")[0]).name for r in rows[1:]) == queries
    labels = [float(r.split(",")[1]) for r in rows[1:]]
    assert min(prompts.scores) <= min(labels) and max(prompts.scores) >= max(labels)
    assert {Path(p).name.split("_")[1] for p in prompts.paths} <= {d.csiq_tag for d in demo.UNSEEN_DISTORTIONS}


def test_default_root_follows_the_cache_variable(monkeypatch, tmp_path):
    monkeypatch.setenv("PROMPTIQA_CACHE", str(tmp_path))
    assert demo.default_demo_root() == tmp_path / "demo"
    monkeypatch.delenv("PROMPTIQA_CACHE")
    assert demo.default_demo_root() == Path.home() / ".cache" / "promptiqa" / "demo"
