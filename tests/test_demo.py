import hashlib
import json
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import pytest

import PromptIQA.data.demo as demo
from PromptIQA.data.dataset_info import check_datasets, load_dataset_info
from PromptIQA.data.datasets import read_dataset
from PromptIQA.data.split import split_records

IMAGES_PER_HALF = len(demo.REFERENCES) // 2 * len(demo.DISTORTIONS) * 5


def tree(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every published file (not the lock)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != ".lock"}


def reference_of(record_path: str, reader: str) -> Path:
    path = Path(record_path)
    if reader == "kadid":
        return path.parent / (path.name.split("_")[0] + ".png")
    return path.parent.parent / "src_imgs" / (path.name.split(".")[0] + ".png")


def quality(record_path: str, reader: str) -> float:
    reference, distorted = (cv2.imread(str(p)) for p in (reference_of(record_path, reader), record_path))
    return demo.ssim_quality(reference, distorted)


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("demo")
    demo.build_demo(root)
    return root


@pytest.fixture(scope="session")
def rebuilt_root(tmp_path_factory) -> Path:
    """A second build, into a folder that a killed build left with a partial copy and no manifest."""
    root = tmp_path_factory.mktemp("rebuilt")
    (root / ".partial-killed").mkdir()
    (root / ".partial-killed" / "half-written.png").write_bytes(b"\x89PNG")
    (root / "demo_kadid" / "images").mkdir(parents=True)
    (root / "demo_kadid" / "dmos.csv").write_text("dist_img,ref_img,dmos,var\n")
    demo.build_demo(root)
    return root


@pytest.fixture(scope="session")
def records(demo_root):
    return {reader: read_dataset(reader, demo_root / f"demo_{reader}") for reader in ("kadid", "csiq")}


def test_build_returns_dataset_folders(demo_root):
    paths = demo.build_demo(demo_root)
    assert paths == {"demo_kadid": str(demo_root / "demo_kadid"), "demo_csiq": str(demo_root / "demo_csiq")}
    assert (demo_root / "demo_kadid" / "dmos.csv").read_text().startswith("dist_img,ref_img,dmos,var\n")
    assert (demo_root / "demo_csiq" / "csiq_label.txt").is_file()


def test_layouts_name_files_as_the_real_datasets(demo_root):
    kadid = sorted(p.name for p in (demo_root / "demo_kadid" / "images").iterdir())
    assert kadid[:3] == ["I01.png", "I01_01_01.png", "I01_01_02.png"]
    assert "I08_25_05.png" in kadid
    csiq = {p.name for p in (demo_root / "demo_csiq" / "dst_imgs_all").iterdir()}
    assert {f"brick.{tag}.{level}.png" for tag in ("AWGN", "BLUR", "JPEG", "contrast") for level in range(1, 6)} <= csiq
    assert (demo_root / "demo_csiq" / "src_imgs" / "brick.png").is_file()


def test_images_are_256_square_colour(records):
    for image in (cv2.imread(records[reader][0].path, cv2.IMREAD_UNCHANGED) for reader in records):
        assert image.shape == (256, 256, 3)


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
    (tmp_path / "demo_kadid").mkdir()
    (tmp_path / "demo_csiq").mkdir()
    (tmp_path / demo.MANIFEST).write_text(json.dumps({"version": demo.DEMO_VERSION - 1}))
    builds = []
    monkeypatch.setattr(demo, "_build", builds.append)
    demo.build_demo(tmp_path)
    assert builds == [tmp_path]


def test_readers_load_both_halves(records):
    for reader, found in records.items():
        assert len(found) == IMAGES_PER_HALF
        assert len({r.unit for r in found}) == len(demo.REFERENCES) // 2
        assert all(0 <= r.label <= 1 for r in found)
        assert all(Path(r.path).is_file() and reference_of(r.path, reader).is_file() for r in found)


@pytest.mark.parametrize("reader, lower_is_better", [("kadid", False), ("csiq", True)])
def test_labels_are_ssim_in_the_dataset_direction(records, reader, lower_is_better):
    checked = [r for r in records[reader] if r.unit < 2]
    assert len(checked) == 2 * len(demo.DISTORTIONS) * 5
    for record in checked:
        q = quality(record.path, reader)
        assert record.label == pytest.approx(1 - q if lower_is_better else q, abs=1e-9)


@pytest.mark.parametrize("tag", ["BLUR", "AWGN", "JPEG", "contrast"])
def test_quality_falls_with_level(records, tag):
    by_level = defaultdict(list)
    for record in records["csiq"]:
        _, found_tag, level, _ = Path(record.path).name.split(".")
        if found_tag == tag:
            by_level[int(level)].append(1 - record.label)
    means = [np.mean(by_level[level]) for level in range(1, 6)]
    assert all(a > b for a, b in zip(means, means[1:])), means


def test_labels_spread_over_the_range(records):
    for found in records.values():
        labels = [r.label for r in found]
        assert min(labels) < 0.1 and max(labels) > 0.9


def test_halves_share_no_reference_content(demo_root):
    kadid = set(tree(demo_root / "demo_kadid" / "images").values())
    csiq = set(tree(demo_root / "demo_csiq" / "src_imgs").values())
    assert len(csiq) == len(demo.REFERENCES) // 2 and not kadid & csiq


@pytest.mark.parametrize("seed", range(5))
def test_split_keeps_content_on_one_side(records, seed):
    for reader, found in records.items():
        train, test = split_records(found, seed)
        train_refs = {reference_of(r.path, reader) for r in train}
        test_refs = {reference_of(r.path, reader) for r in test}
        assert train and test and not train_refs & test_refs
        assert len(train) + len(test) == len(found)


def test_dataset_info_entries_load(demo_root, tmp_path, monkeypatch):
    monkeypatch.setattr(demo, "_build", lambda root: pytest.fail("the demo was built already"))
    info = demo.demo_dataset_info(demo_root)
    assert info == {"demo_kadid": {"root": str(demo_root / "demo_kadid"), "reader": "kadid"},
                    "demo_csiq": {"root": str(demo_root / "demo_csiq"), "reader": "csiq"}}
    (tmp_path / "dataset_info.json").write_text(json.dumps(info))
    found = check_datasets(list(info), load_dataset_info(tmp_path / "dataset_info.json"))
    assert {name: len(r) for name, r in found.items()} == {"demo_kadid": IMAGES_PER_HALF, "demo_csiq": IMAGES_PER_HALF}


def test_default_root_follows_the_cache_variable(monkeypatch, tmp_path):
    monkeypatch.setenv("PROMPTIQA_CACHE", str(tmp_path))
    assert demo.default_demo_root() == tmp_path / "demo"
    monkeypatch.delenv("PROMPTIQA_CACHE")
    assert demo.default_demo_root() == Path.home() / ".cache" / "promptiqa" / "demo"
