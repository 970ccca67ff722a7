"""A small synthetic IQA dataset that ships with the install, for trying the pipeline end to end.

Sixteen natural photos bundled with scikit-image are cut to 256 x 256 px and distorted
with Gaussian blur, white Gaussian noise, JPEG compression and contrast reduction at five levels
each (20 distorted images per reference). Each distorted image is scored by full-reference SSIM
against its reference, q = clip(SSIM, 0, 1), rounded to 6 decimals so both label files hold q
exactly.

The references alternate between two halves written in two real datasets' on-disk layouts, so the
ordinary readers load them (spec: datasets.md):

- ``demo_kadid`` (reader ``kadid``): KADID-10k layout, ``dmos`` column s = 1 + 5q so that KADID's
  (s - 1) / 5 gives label q (higher is better). s exceeds KADID's 1-5 scale for q > 0.8.
- ``demo_csiq`` (reader ``csiq``): CSIQ layout, dmos = 1 - q (lower is better, on purpose: the two
  halves ask for opposite directions, which is what prompts are for).

The halves share no reference image, so training on one and testing on the other never sees the
same content. A build writes into a temporary folder and publishes ``manifest.json`` last; a
folder without a current manifest is rebuilt.
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

DEMO_VERSION = 1
MANIFEST = "manifest.json"
SIZE = 256
LABEL_DECIMALS = 6

# skimage.data images that are bundled with scikit-image (no download needed).
REFERENCES = (
    "astronaut", "brick", "camera", "cell", "chelsea", "clock", "coffee", "coins",
    "grass", "gravel", "hubble_deep_field", "immunohistochemistry", "moon", "retina", "rocket",
    "stereo_motorcycle",
)


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


@dataclass(frozen=True)
class Distortion:
    kadid_id: int  # the distortion's number in KADID-10k
    csiq_tag: str  # its name in CSIQ file names
    apply: Callable[[np.ndarray, float, np.random.Generator], np.ndarray]
    levels: tuple[float, ...]  # parameter of levels 1..5, mildest first


DISTORTIONS = (
    Distortion(1, "BLUR", _gaussian_blur, (0.5, 1.0, 2.0, 3.5, 6.0)),  # sigma in px
    Distortion(10, "JPEG", _jpeg, (70, 40, 20, 10, 4)),  # quality
    Distortion(11, "AWGN", _white_noise, (5.0, 10.0, 20.0, 35.0, 60.0)),  # sigma in grey levels
    Distortion(25, "contrast", _contrast, (0.8, 0.65, 0.5, 0.35, 0.2)),  # contrast factor
)


def default_demo_root() -> Path:
    return cache_root() / "demo"


def load_reference(name: str) -> np.ndarray:
    """The skimage photo `name` as 8-bit BGR, resized to shorter side SIZE and centre-cropped square.

    Square, because the model resizes whole images to 224 x 224 and would squash other shapes.
    """
    image = getattr(skimage_data, name)()
    if isinstance(image, tuple):  # stereo pairs: keep the left view
        image = image[0]
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    else:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    height, width = image.shape[:2]
    scale = SIZE / min(height, width)
    image = cv2.resize(image, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA)
    top, left = (image.shape[0] - SIZE) // 2, (image.shape[1] - SIZE) // 2
    return image[top:top + SIZE, left:left + SIZE]


def ssim_quality(reference: np.ndarray, distorted: np.ndarray) -> float:
    """Greyscale SSIM as Wang et al. define it (Gaussian window, sigma 1.5), clipped to [0, 1]."""
    grey = [cv2.cvtColor(x, cv2.COLOR_BGR2GRAY).astype(np.float32) for x in (reference, distorted)]
    ssim = structural_similarity(*grey, data_range=255, gaussian_weights=True, sigma=1.5,
                                 use_sample_covariance=False)
    return round(float(np.clip(ssim, 0.0, 1.0)), LABEL_DECIMALS)


def distorted_versions(reference: np.ndarray, seed: int) -> Iterator[tuple[Distortion, int, np.ndarray, float]]:
    """Yield (distortion, level 1..5, image, q) for every distortion of DISTORTIONS."""
    for distortion in DISTORTIONS:
        for level, parameter in enumerate(distortion.levels, start=1):
            rng = np.random.default_rng((seed, distortion.kadid_id, level))
            image = distortion.apply(reference, parameter, rng)
            yield distortion, level, image, ssim_quality(reference, image)


def _write_png(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), image):
        raise OSError(f"{path}: cannot write the image")


@dataclass(frozen=True)
class Layout:
    """One real dataset's file names and label file, as format strings.

    {ref} is the reference's file stem (from {number}, its 1-based place in the half, and {name},
    its skimage name), {dist} a Distortion, {file} a distorted image's file name and {score} the
    label-file score of quality q.
    """

    reader: str
    ref: str
    reference: str
    distorted: str
    label_file: str
    header: str
    row: str
    score: Callable[[float], float]


LAYOUTS = {
    # KADID's constant maps s to (s - 1) / 5, so s = 1 + 5q gives label q.
    "demo_kadid": Layout(
        reader="kadid", ref="I{number:02d}", reference="images/{ref}.png",
        distorted="images/{ref}_{dist.kadid_id:02d}_{level:02d}.png", label_file="dmos.csv",
        header="dist_img,ref_img,dmos,var\n", row="{file},{ref}.png,{score},0",
        score=lambda q: 1 + 5 * q),
    # CSIQ's label is the DMOS itself, lower is better.
    "demo_csiq": Layout(
        reader="csiq", ref="{name}", reference="src_imgs/{ref}.png",
        distorted="dst_imgs_all/{ref}.{dist.csiq_tag}.{level}.png", label_file="csiq_label.txt",
        header="", row="{file} {score}", score=lambda q: 1 - q),
}


def _write_reference(folder: Path, layout: Layout, ref: str, index: int) -> list[str]:
    """Write REFERENCES[index] and its distorted versions; return their label-file rows."""
    reference = load_reference(REFERENCES[index])
    _write_png(folder / layout.reference.format(ref=ref), reference)
    rows = []
    for distortion, level, image, q in distorted_versions(reference, seed=index):
        path = folder / layout.distorted.format(ref=ref, dist=distortion, level=level)
        _write_png(path, image)
        score = f"{layout.score(q):.{LABEL_DECIMALS}f}"
        rows.append(layout.row.format(file=path.name, ref=ref, score=score))
    return rows


def demo_references() -> dict[str, dict[str, int]]:
    """{dataset: {reference file stem: index in REFERENCES}}; the references alternate between halves."""
    return {
        dataset: {layout.ref.format(number=number, name=REFERENCES[index]): index
                  for number, index in enumerate(range(half, len(REFERENCES), len(LAYOUTS)), start=1)}
        for half, (dataset, layout) in enumerate(LAYOUTS.items())
    }


def _is_built(root: Path) -> bool:
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
        references = demo_references()
        for dataset, refs in references.items():
            layout, folder = LAYOUTS[dataset], staging / dataset
            rows = [row for ref, index in refs.items() for row in _write_reference(folder, layout, ref, index)]
            (folder / layout.label_file).write_text(layout.header + "\n".join(rows) + "\n")
        for dataset in LAYOUTS:
            shutil.rmtree(root / dataset, ignore_errors=True)
            os.replace(staging / dataset, root / dataset)
        manifest = {
            "version": DEMO_VERSION,
            "datasets": {dataset: {"reader": LAYOUTS[dataset].reader,
                                   "references": {ref: REFERENCES[index] for ref, index in refs.items()}}
                         for dataset, refs in references.items()},
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        os.replace(staging / MANIFEST, root / MANIFEST)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def build_demo(root: str | os.PathLike | None = None, force: bool = False) -> dict[str, str]:
    """Build the demo into `root` unless it is already there; return {dataset name: folder}."""
    root = (Path(root) if root is not None else default_demo_root()).expanduser().absolute()
    paths = {name: str(root / name) for name in LAYOUTS}
    if not force and _is_built(root):
        return paths
    root.mkdir(parents=True, exist_ok=True)
    # Processes starting together (e.g. one per GPU) wait for one build instead of racing.
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if force or not _is_built(root):
            _build(root)
    return paths


def demo_dataset_info(root: str | os.PathLike | None = None) -> dict[str, dict[str, str]]:
    """dataset_info.json entries for the demo (built on first use), in the object form with `reader`."""
    paths = build_demo(root)
    return {name: {"root": paths[name], "reader": layout.reader} for name, layout in LAYOUTS.items()}
