"""A small synthetic IQA dataset that ships with the install, for trying the pipeline end to end.

Sixteen photos bundled with scikit-image give the content. Each demo dataset takes its own
CROPS_PER_PHOTO random square crops (random position and scale) of every photo, SIZE x SIZE px, the
size the demo model reads, so no distortion is scaled away. Three requirements are labelled, one per
dataset, each written in a real dataset's on-disk layout so the ordinary readers load it
(docs/datasets.md):

- ``demo_kadid`` (reader ``kadid``), quality: the crops are distorted by Gaussian blur, JPEG and
  white noise at five levels each. The label is the distortion-level quality q: the SSIM between
  crop and distorted image, clipped to [0, 1], averaged over all crops of the dataset with that
  distortion and level. Like a mean opinion score it says how strong the distortion is, not how
  much texture a crop has to show it (per-image SSIM ranks flat crops above textured ones at
  the same distortion, which no model can learn from a few photos). Written as KADID's ``dmos``
  s = 1 + 5q so that (s - 1) / 5 gives q.
- ``demo_csiq`` (reader ``csiq``), quality in the opposite direction: dmos = 1 - q (lower is
  better), so that only the prompts tell which way this dataset's scores run.
- ``demo_brightness`` (reader ``csv``), not quality at all: the mean luma (BT.601) of the image in
  [0, 1], over the quality distortions and three exposure ones (brightening, darkening, contrast
  reduction), so that the same kind of image ranks differently depending only on the prompts.

Labels are rounded to 6 decimals so the label files hold them exactly. In every dataset the split
unit is the photo (named I01 ... I16 in all three, so one seed splits them alike; the crop number
comes after it): the test split's photos are never seen in training, whatever the dataset.

`build_unseen_check` writes a separate check of generalisation: other photos, distortions the demo
never shows, a prompts.json of ISPs and the query images with their labels.

A build writes into a temporary folder and publishes ``manifest.json`` last; a folder without a
current manifest is rebuilt.
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np
from skimage import data as skimage_data
from skimage.metrics import structural_similarity

from .cache import cache_root

DEMO_VERSION = 3
MANIFEST = "manifest.json"
SIZE = 64  # the demo model's --img-size
CROPS_PER_PHOTO = 8
LABEL_DECIMALS = 6
CROP_SCALES = (0.4, 1.0)  # side of a crop, as a fraction of the photo's shorter side

# skimage.data images that are bundled with scikit-image (no download needed).
REFERENCES = (
    "astronaut", "brick", "camera", "cell", "clock", "coins", "grass", "gravel", "hubble_deep_field",
    "immunohistochemistry", "moon", "page", "retina", "rocket", "stereo_motorcycle", "text",
)
# Photos the demo datasets never show, for build_unseen_check.
UNSEEN_PHOTOS = ("chelsea", "coffee")


def _gaussian_blur(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    return cv2.GaussianBlur(image, (0, 0), sigma)


def _white_noise(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    noisy = image + rng.normal(0.0, sigma, image.shape)
    return np.clip(noisy, 0, 255).round().astype(np.uint8)


def _jpeg(image: np.ndarray, quality: float, rng: np.random.Generator) -> np.ndarray:
    _, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    return cv2.imdecode(encoded, cv2.IMREAD_COLOR)


def _contrast(image: np.ndarray, factor: float, rng: np.random.Generator) -> np.ndarray:
    # Scale around the global mean so that only contrast changes, not brightness.
    mean = image.mean()
    return np.clip(mean + factor * (image - mean), 0, 255).round().astype(np.uint8)


def _gamma(image: np.ndarray, gamma: float, rng: np.random.Generator) -> np.ndarray:
    # A gamma curve keeps black and white where they are: no clipping, brightness moves smoothly.
    table = (255 * (np.arange(256) / 255) ** gamma).round().astype(np.uint8)
    return cv2.LUT(image, table)


def _motion_blur(image: np.ndarray, length: float, rng: np.random.Generator) -> np.ndarray:
    kernel = np.zeros((int(length), int(length)), np.float32)
    kernel[int(length) // 2, :] = 1 / int(length)
    return cv2.filter2D(image, -1, kernel)


def _impulse_noise(image: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    noisy = image.copy()
    hit = rng.random(image.shape[:2])
    noisy[hit < amount / 2] = 0
    noisy[hit > 1 - amount / 2] = 255
    return noisy


def _pixelate(image: np.ndarray, block: float, rng: np.random.Generator) -> np.ndarray:
    small = cv2.resize(image, (SIZE // int(block),) * 2, interpolation=cv2.INTER_AREA)
    return cv2.resize(small, image.shape[1::-1], interpolation=cv2.INTER_NEAREST)


@dataclass(frozen=True)
class Distortion:
    kadid_id: int  # the distortion's number in KADID-10k
    csiq_tag: str  # its name in CSIQ file names
    apply: Callable[[np.ndarray, float, np.random.Generator], np.ndarray]
    levels: tuple[float, ...]  # parameter of levels 1..5, mildest first


QUALITY_DISTORTIONS = (
    Distortion(1, "BLUR", _gaussian_blur, (0.5, 1.0, 1.6, 2.5, 4.0)),  # sigma in px
    Distortion(10, "JPEG", _jpeg, (60, 30, 15, 8, 3)),  # quality
    Distortion(11, "AWGN", _white_noise, (4.0, 8.0, 16.0, 30.0, 55.0)),  # sigma in grey levels
)
DISTORTIONS = QUALITY_DISTORTIONS + (
    Distortion(16, "brighten", _gamma, (0.8, 0.65, 0.5, 0.38, 0.28)),  # gamma
    Distortion(17, "darken", _gamma, (1.25, 1.55, 2.0, 2.6, 3.5)),  # gamma
    Distortion(25, "contrast", _contrast, (0.8, 0.6, 0.45, 0.3, 0.18)),  # contrast factor
)
# Only in build_unseen_check: kinds the demo datasets never show.
UNSEEN_DISTORTIONS = (
    Distortion(2, "MOTION", _motion_blur, (3, 5, 7, 11, 15)),  # kernel length in px
    Distortion(14, "IMPULSE", _impulse_noise, (0.01, 0.03, 0.06, 0.12, 0.2)),  # fraction of pixels
    Distortion(19, "PIXELATE", _pixelate, (2, 3, 4, 6, 8)),  # block size in px
)


def default_demo_root() -> Path:
    return cache_root() / "demo"


def load_photo(name: str) -> np.ndarray:
    """The skimage photo `name` as 8-bit BGR (grey photos are repeated over the three channels)."""
    image = getattr(skimage_data, name)()
    if isinstance(image, tuple):  # stereo pairs: keep the left view
        image = image[0]
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    return cv2.cvtColor(image[..., :3], cv2.COLOR_RGB2BGR)


def random_crop(photo: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A square crop of random scale (CROP_SCALES) and position, resized to SIZE x SIZE.

    Square, because the model resizes whole images to a square and would squash other shapes.
    """
    height, width = photo.shape[:2]
    side = round(min(height, width) * rng.uniform(*CROP_SCALES))
    top, left = rng.integers(0, height - side + 1), rng.integers(0, width - side + 1)
    crop = photo[top:top + side, left:left + side]
    interpolation = cv2.INTER_AREA if side >= SIZE else cv2.INTER_CUBIC
    return cv2.resize(crop, (SIZE, SIZE), interpolation=interpolation)


def ssim_quality(reference: np.ndarray, distorted: np.ndarray) -> float:
    """Greyscale SSIM as Wang et al. define it (Gaussian window, sigma 1.5), clipped to [0, 1]."""
    grey = [cv2.cvtColor(x, cv2.COLOR_BGR2GRAY).astype(np.float32) for x in (reference, distorted)]
    ssim = structural_similarity(*grey, data_range=255, gaussian_weights=True, sigma=1.5,
                                 use_sample_covariance=False)
    return float(np.clip(ssim, 0.0, 1.0))


@dataclass(frozen=True)
class DistortedImage:
    """One distorted version of a crop: the photo's name (its unit name, I01 ..., in the demo datasets),
    the crop's number, what was done."""

    ref: str
    crop_index: int
    distortion: Distortion
    level: int
    crop: np.ndarray
    image: np.ndarray


def distortion_level_quality(items: list[DistortedImage]) -> list[float]:
    """Each image's SSIM quality averaged over all `items` with its distortion and level."""
    by_kind_and_level: dict[tuple[int, int], list[float]] = {}
    keys = [(item.distortion.kadid_id, item.level) for item in items]
    for key, item in zip(keys, items):
        by_kind_and_level.setdefault(key, []).append(ssim_quality(item.crop, item.image))
    return [round(float(np.mean(by_kind_and_level[key])), LABEL_DECIMALS) for key in keys]


def brightness(image: np.ndarray) -> float:
    """Mean luma (BT.601, as OpenCV's BGR to grey) in [0, 1]."""
    return round(float(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY).mean() / 255), LABEL_DECIMALS)


def distorted_versions(
    reference: np.ndarray, seed: tuple[int, ...], distortions: tuple[Distortion, ...] = DISTORTIONS
) -> Iterator[tuple[Distortion, int, np.ndarray]]:
    """Yield (distortion, level 1..5, image) for every distortion and level."""
    for distortion in distortions:
        for level, parameter in enumerate(distortion.levels, start=1):
            rng = np.random.default_rng((*seed, distortion.kadid_id, level))
            yield distortion, level, distortion.apply(reference, parameter, rng)


def _write_png(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), image):
        raise OSError(f"{path}: cannot write the image")


@dataclass(frozen=True)
class Layout:
    """One real dataset's file names and label file, and the requirement it is labelled with.

    Format strings: {ref} is the photo's unit name (I01 ...), {crop} the crop's number, {dist} a
    Distortion, {level} its level, {file} a distorted image's path relative to the dataset folder
    and {score} its label. `score` turns (distortion-level quality, distorted image) into the
    label-file score; `higher_is_better` says which way the label runs.
    """

    reader: str
    reference: str
    distorted: str
    label_file: str
    header: str
    row: str
    score: Callable[[float, np.ndarray], float]
    distortions: tuple[Distortion, ...] = QUALITY_DISTORTIONS
    higher_is_better: bool = True


LAYOUTS = {
    # KADID's constant maps s to (s - 1) / 5, so s = 1 + 5q gives label q.
    # The reader takes the unit from the name up to the first "_".
    "demo_kadid": Layout(
        reader="kadid", reference="images/{ref}_c{crop}.png",
        distorted="images/{ref}_{dist.kadid_id:02d}_{level:02d}_c{crop}.png",
        label_file="dmos.csv", header="dist_img,ref_img,dmos,var\n", row="{name},{ref}_c{crop}.png,{score},0",
        score=lambda q, image: 1 + 5 * q),
    # CSIQ's label is the DMOS itself, lower is better; the reader takes the unit up to the first ".".
    "demo_csiq": Layout(
        reader="csiq", reference="src_imgs/{ref}.c{crop}.png",
        distorted="dst_imgs_all/{ref}.{dist.csiq_tag}.{level}.c{crop}.png",
        label_file="csiq_label.txt", header="", row="{name} {score}",
        score=lambda q, image: 1 - q, higher_is_better=False),
    # The csv reader keeps the photo as split unit (SPAQ's layout would make every image its own).
    "demo_brightness": Layout(
        reader="csv", reference="references/{ref}_c{crop}.png",
        distorted="images/{ref}_{dist.kadid_id:02d}_{level:02d}_c{crop}.png",
        label_file="labels.csv", header="path,score,unit\n", row="{file},{score},{ref}",
        score=lambda q, image: brightness(image), distortions=DISTORTIONS),
}


def unit_name(index: int) -> str:
    return f"I{index + 1:02d}"


def _distort_photo(layout: Layout, dataset_index: int, index: int) -> Iterator[DistortedImage]:
    """CROPS_PER_PHOTO crops of REFERENCES[index], each with its distorted versions."""
    photo = load_photo(REFERENCES[index])
    for crop_index in range(CROPS_PER_PHOTO):
        seed = (dataset_index, index, crop_index)
        crop = random_crop(photo, np.random.default_rng(seed))
        for distortion, level, image in distorted_versions(crop, seed, layout.distortions):
            yield DistortedImage(unit_name(index), crop_index, distortion, level, crop, image)


def _write_dataset(folder: Path, layout: Layout, dataset_index: int) -> None:
    """Write the crops, their distorted versions and the label file of one dataset."""
    items = [item for index in range(len(REFERENCES)) for item in _distort_photo(layout, dataset_index, index)]
    rows = []
    for item, quality in zip(items, distortion_level_quality(items)):
        names = {"ref": item.ref, "crop": item.crop_index}
        if item.distortion is layout.distortions[0] and item.level == 1:  # the crop's first version
            _write_png(folder / layout.reference.format(**names), item.crop)
        file = layout.distorted.format(dist=item.distortion, level=item.level, **names)
        _write_png(folder / file, item.image)
        score = f"{layout.score(quality, item.image):.{LABEL_DECIMALS}f}"
        rows.append(layout.row.format(file=file, name=Path(file).name, score=score, **names))
    (folder / layout.label_file).write_text(layout.header + "\n".join(rows) + "\n")


def is_built(root: str | os.PathLike | None = None) -> bool:
    """Whether the current version of the demo is complete in `root` (default: the cache)."""
    root = Path(root) if root is not None else default_demo_root()
    try:
        manifest = json.loads((root / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    return manifest.get("version") == DEMO_VERSION and all((root / name).is_dir() for name in LAYOUTS)


def _build(root: Path) -> None:
    (root / MANIFEST).unlink(missing_ok=True)
    for leftover in root.glob(".partial-*"):
        shutil.rmtree(leftover)
    staging = Path(tempfile.mkdtemp(prefix=".partial-", dir=root))
    try:
        for dataset_index, (dataset, layout) in enumerate(LAYOUTS.items()):
            _write_dataset(staging / dataset, layout, dataset_index)
        for dataset in LAYOUTS:
            shutil.rmtree(root / dataset, ignore_errors=True)
            os.replace(staging / dataset, root / dataset)
        manifest = {
            "version": DEMO_VERSION,
            "datasets": {name: {"reader": layout.reader} for name, layout in LAYOUTS.items()},
            "units": {unit_name(i): name for i, name in enumerate(REFERENCES)},
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        os.replace(staging / MANIFEST, root / MANIFEST)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def build_demo(root: str | os.PathLike | None = None, force: bool = False) -> dict[str, str]:
    """Build the demo into `root` unless it is already there; return {dataset name: folder}."""
    root = (Path(root) if root is not None else default_demo_root()).expanduser().absolute()
    paths = {name: str(root / name) for name in LAYOUTS}
    if not force and is_built(root):
        return paths
    root.mkdir(parents=True, exist_ok=True)
    # Processes starting together (e.g. one per GPU) wait for one build instead of racing.
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if force or not is_built(root):
            _build(root)
    return paths


def demo_dataset_info(root: str | os.PathLike | None = None) -> dict[str, dict[str, str]]:
    """dataset_info.json entries for the demo (built on first use), in the object form with `reader`."""
    paths = build_demo(root)
    return {name: {"root": paths[name], "reader": layout.reader} for name, layout in LAYOUTS.items()}


def build_unseen_check(
    folder: str | os.PathLike, photos: tuple[str, ...] = UNSEEN_PHOTOS, crops: int = 3, prompt_num: int = 10,
    seed: int = 0,
) -> dict[str, Path]:
    """Write a generalisation check: crops of photos and distortions the demo never shows.

    Labels are distortion-level quality q over these crops, as in `demo_kadid`. `prompts.json` holds
    `prompt_num` ISPs spread over the label range (images under prompts/); the other images are the
    queries (images/) with their labels in `labels.csv` (path,score). Score them with
    `test.py --prompts prompts.json --images images --output scores.csv` and compare to labels.csv.
    Returns {"prompts": ..., "images": ..., "labels": ...}.
    """
    folder = Path(folder)
    rng = np.random.default_rng(seed)
    items = []
    for name in photos:
        photo = load_photo(name)
        for crop_index in range(crops):
            crop = random_crop(photo, rng)
            for distortion, level, image in distorted_versions(crop, (seed, crop_index), UNSEEN_DISTORTIONS):
                items.append(DistortedImage(name, crop_index, distortion, level, crop, image))
    qualities = distortion_level_quality(items)
    # Prompts: evenly spaced ranks of the label order, so they cover the whole range.
    order = np.argsort(qualities, kind="stable")
    prompt_positions = set(order[np.linspace(0, len(items) - 1, prompt_num).round().astype(int)].tolist())
    isp, labels = [], []
    for position, (item, q) in enumerate(zip(items, qualities)):
        file = f"{item.ref}{item.crop_index}_{item.distortion.csiq_tag}_{item.level}.png"
        if position in prompt_positions:
            _write_png(folder / "prompts" / file, item.image)
            isp.append([f"prompts/{file}", q])
        else:
            _write_png(folder / "images" / file, item.image)
            labels.append(f"images/{file},{q:.{LABEL_DECIMALS}f}")
    (folder / "prompts.json").write_text(json.dumps({"isp": isp}, indent=1) + "\n")
    (folder / "labels.csv").write_text("path,score\n" + "\n".join(labels) + "\n")
    return {"prompts": folder / "prompts.json", "images": folder / "images", "labels": folder / "labels.csv"}
