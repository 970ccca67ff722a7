"""Tiny datasets in the on-disk layouts of the twelve IQA datasets (docs/datasets.md).

Each writer fills a folder with a few 8x8 images and the label files under their real names,
with the real variable/column names and array shapes, and returns what a reader must produce
for every dataset name that reads the folder: image paths relative to the root, labels, and the
reference image of each image (None for image-unit datasets).
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import scipy.io
from openpyxl import Workbook

PIXELS = np.arange(8 * 8 * 3, dtype=np.uint8).reshape(8, 8, 3)


@dataclass(frozen=True)
class Expected:
    paths: list[str]
    labels: list[float]
    references: list[str] | None = None


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_image(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), PIXELS), path


def write_images(root: Path, paths: list[str]) -> None:
    for path in paths:
        write_image(root / path)


def cell_array(strings: list[str], shape: tuple[int, int]) -> np.ndarray:
    """A MATLAB cell array of strings, as scipy.io.savemat writes it."""
    cells = np.empty(len(strings), dtype=object)
    cells[:] = strings
    return cells.reshape(shape)


def write_xlsx(path: Path, header: tuple, rows: list[tuple]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    workbook = Workbook()
    sheet = workbook.active
    sheet.append(header)
    for row in rows:
        sheet.append(row)
    workbook.save(path)


def write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        writer.writerows(rows)


def write_live(root: Path) -> dict[str, Expected]:
    # entry index -> (image, reference, dmos); every other entry is an undistorted copy (orgs = 1)
    # with dmos 0, whose label (0 - 1) / 100 would be out of range if it were not skipped
    kept = {
        0: ("jp2k/img1.bmp", "studentsculpture.bmp", 30.5),
        1: ("jp2k/img2.bmp", "bikes.bmp", 1.0),
        231: ("jpeg/img5.bmp", "buildings.bmp", 101.0),
        460: ("wn/img1.bmp", "bikes.bmp", 55.25),
        636: ("gblur/img3.bmp", "womanhat.bmp", 12.0),
        981: ("fastfading/img174.bmp", "studentsculpture.bmp", 70.0),
    }
    dmos, orgs = np.zeros((1, 982)), np.ones((1, 982))
    refnames = ["bikes.bmp"] * 982
    for index, (_, reference, score) in kept.items():
        dmos[0, index], orgs[0, index], refnames[index] = score, 0, reference
    root.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(root / "dmos_realigned.mat", {"dmos": dmos, "orgs": orgs})
    scipy.io.savemat(root / "refnames_all.mat", {"refnames_all": cell_array(refnames, (1, 982))})
    paths = [path for path, _, _ in kept.values()]
    write_images(root, paths + [f"refimgs/{r}" for r in sorted({r for _, r, _ in kept.values()})])
    return {"live": Expected(paths, [(s - 1) / 100 for _, _, s in kept.values()],
                             [r for _, r, _ in kept.values()])}


def write_csiq(root: Path) -> dict[str, Expected]:
    rows = [("sunset_sparrow.AWGN.1.png", 0.0), ("1600.BLUR.2.png", 0.125), ("aerial_city.jpeg.3.png", 1.0),
            ("1600.AWGN.1.png", 0.5), ("sunset_sparrow.fnoise.5.png", 0.75)]
    root.mkdir(parents=True, exist_ok=True)
    (root / "csiq_label.txt").write_text("".join(f"{name} {score}\n" for name, score in rows) + "\n")
    write_images(root, [f"dst_imgs_all/{name}" for name, _ in rows]
                 + [f"src_imgs/{r}.png" for r in ("1600", "aerial_city", "sunset_sparrow")])
    return {"csiq": Expected([f"dst_imgs_all/{n}" for n, _ in rows], [s for _, s in rows],
                             ["sunset_sparrow", "1600", "aerial_city", "1600", "sunset_sparrow"])}


def write_tid2013(root: Path) -> dict[str, Expected]:
    rows = [(5.51429, "i25_01_1.bmp"), (9.0, "i01_01_1.bmp"), (0.0, "I02_03_4.bmp"), (4.5, "i02_24_5.bmp")]
    root.mkdir(parents=True, exist_ok=True)
    (root / "mos_with_names.txt").write_text("".join(f"{score} {name}\n" for score, name in rows))
    write_images(root, [f"distorted_images/{name}" for _, name in rows]
                 + ["reference_images/I01.BMP", "reference_images/I02.BMP", "reference_images/i25.bmp"])
    return {"tid2013": Expected([f"distorted_images/{n}" for _, n in rows], [s / 9 for s, _ in rows],
                                ["25", "01", "02", "02"])}


def write_kadid(root: Path) -> dict[str, Expected]:
    rows = [["I81_01_01.png", "I81.png", 4.57, 0.496], ["I01_02_03.png", "I01.png", 1.0, 0.3],
            ["I03_10_05.png", "I03.png", 3.2, 0.9], ["I01_25_01.png", "I01.png", 5.0, 0.1]]
    write_csv(root / "dmos.csv", ["dist_img", "ref_img", "dmos", "var"], rows)
    write_images(root, [f"images/{r[0]}" for r in rows] + [f"images/{r}" for r in ("I01.png", "I03.png", "I81.png")])
    return {"kadid": Expected([f"images/{r[0]}" for r in rows], [(r[2] - 1) / 5 for r in rows],
                              [r[0][:3] for r in rows])}


def write_bid(root: Path) -> dict[str, Expected]:
    rows = [(1, 4.2), (3, 0.0), (12, 2.75), (586, 9.0)]
    write_xlsx(root / "DatabaseGrades.xlsx", ("Image Number", "Average Rating"), rows)
    paths = [f"DatabaseImage{number:04d}.JPG" for number, _ in rows]
    write_images(root, paths)
    return {"bid": Expected(paths, [s / 9 for _, s in rows])}


SPAQ_ATTRIBUTES = ("brightness", "colorfulness", "contrast", "noisiness", "sharpness")


def write_spaq(root: Path) -> dict[str, Expected]:
    rows = [("00001.jpg", 42.3, 50.0, 61.2, 30.0, 20.5, 70.0), ("00002.jpg", 88.0, 10.0, 0.0, 99.0, 45.0, 65.5),
            ("00010.jpg", 0.0, 100.0, 33.3, 12.0, 80.0, 5.0)]
    write_xlsx(root / "Annotations/MOS_and_Image_attribute_scores.xlsx",
               ("Image name", "MOS", "Brightness", "Colorfulness", "Contrast", "Noisiness", "Sharpness"), rows)
    paths = [f"img_resize/{row[0]}" for row in rows]
    write_images(root, paths)
    expected = {"spaq": Expected(paths, [row[1] / 100 for row in rows])}
    for column, attribute in enumerate(SPAQ_ATTRIBUTES, start=2):
        expected[f"spaq_{attribute}"] = Expected(paths, [row[column] / 100 for row in rows])
    return expected


def write_livec(root: Path) -> dict[str, Expected]:
    # the 7 practice images come first; their MOS 0 would map out of range if they were read
    practice = [(f"trainingImages/t{i}.bmp", 0.0) for i in range(1, 8)]
    rows = [("100.bmp", 63.9), ("1000.JPG", 1.0), ("102.bmp", 101.0), ("9.bmp", 30.25)]
    entries = practice + rows
    scipy.io.savemat(_mkdir(root / "Data") / "AllImages_release.mat",
                     {"AllImages_release": cell_array([n for n, _ in entries], (len(entries), 1))})
    scipy.io.savemat(root / "Data/AllMOS_release.mat", {"AllMOS_release": np.array([[s for _, s in entries]])})
    paths = [f"Images/{n}" for n, _ in rows]
    write_images(root, paths)
    return {"livec": Expected(paths, [(s - 1) / 100 for _, s in rows])}


def write_koniq10k(root: Path) -> dict[str, Expected]:
    rows = [["10004473376.jpg", 0, 0, 25, 73, 2, 100, 77.38, 7.1, 75.2, "training"],
            ["10007357496.jpg", 1, 10, 50, 30, 9, 100, 3.5, 12.0, 40.1, "test"],
            ["10024362093.jpg", 0, 0, 0, 0, 100, 100, 100.0, 0.0, 99.0, "validation"]]
    write_csv(root / "koniq10k_distributions_sets.csv",
              ["image_name", "c1", "c2", "c3", "c4", "c5", "c_total", "MOS", "SD", "MOS_zscore", "set"], rows)
    paths = [f"1024x768/{r[0]}" for r in rows]
    write_images(root, paths)
    return {"koniq10k": Expected(paths, [r[7] / 100 for r in rows])}


def write_gfiqa_20k(root: Path) -> dict[str, Expected]:
    rows = [["00000.png", 0.61], ["00001.png", 0.0], ["19987.png", 1.0]]
    write_csv(root / "mos.csv", ["img_name", "mos"], rows)
    paths = [f"image/{r[0]}" for r in rows]
    write_images(root, paths)
    return {"gfiqa_20k": Expected(paths, [r[1] for r in rows])}


def write_agiqa_3k(root: Path) -> dict[str, Expected]:
    rows = [["AttnGAN_normal_000.jpg", "statue of a cat, detailed", "", "", "", 1.2, 0.5, 3.1, 0.6],
            ["midjourney_lowstep_042.png", "a red bus", "old", "", "realistic", 4.9, 0.2, 5.0, 0.1],
            ["sd1.5_highcorr_999.png", "two dogs, one ball", "", "bright", "", 0.0, 0.4, 0.25, 0.3]]
    write_csv(root / "data.csv", ["name", "prompt", "adj1", "adj2", "style", "mos_quality", "std_quality",
                                  "mos_align", "std_align"], rows)
    paths = [f"img/{r[0]}" for r in rows]
    write_images(root, paths)
    return {"agiqa_3k": Expected(paths, [r[5] / 5 for r in rows]),
            "agiqa_3k_align": Expected(paths, [r[7] / 5 for r in rows])}


def write_aigciqa2023(root: Path) -> dict[str, Expected]:
    criteria = {"mosz1": [55.0, 0.0, 100.0, 42.5], "mosz2": [10.0, 20.0, 30.0, 40.0], "mosz3": [99.5, 0.5, 50.0, 60.0]}
    for file, scores in criteria.items():
        scipy.io.savemat(_mkdir(root / "DATA/MOS") / f"{file}.mat", {"MOSz": np.array(scores).reshape(-1, 1)})
    paths = [f"Image/allimg/{i}.png" for i in range(4)]
    write_images(root, paths)
    return {"aigciqa2023": Expected(paths, [s / 100 for s in criteria["mosz1"]]),
            "aigciqa2023_mosz2": Expected(paths, [s / 100 for s in criteria["mosz2"]]),
            "aigciqa2023_mosz3": Expected(paths, [s / 100 for s in criteria["mosz3"]])}


def write_uwiqa(root: Path) -> dict[str, Expected]:
    rows = [(1, 0.5), (2, 0.3), (10, 1.0), (890, 0.0)]
    write_xlsx(root / "IQA_Value.xlsx", ("Image", "Score"), rows)
    paths = [f"img/{number:04d}.png" for number, _ in rows]
    write_images(root, paths)
    expected = Expected(paths, [s for _, s in rows])
    return {"uwiqa": expected, "uqiqa": expected}


WRITERS = {
    "live": write_live, "csiq": write_csiq, "tid2013": write_tid2013, "kadid": write_kadid, "bid": write_bid,
    "spaq": write_spaq, "livec": write_livec, "koniq10k": write_koniq10k, "gfiqa_20k": write_gfiqa_20k,
    "agiqa_3k": write_agiqa_3k, "aigciqa2023": write_aigciqa2023, "uwiqa": write_uwiqa,
}
# every dataset name a writer's folder answers to -> the writer
FOLDER_OF = {
    **{base: base for base in WRITERS}, **{f"spaq_{a}": "spaq" for a in SPAQ_ATTRIBUTES},
    "agiqa_3k_align": "agiqa_3k", "aigciqa2023_mosz2": "aigciqa2023", "aigciqa2023_mosz3": "aigciqa2023",
    "uqiqa": "uwiqa",
}


def write_dataset(name: str, root: Path) -> Expected:
    """Write the fixture folder that dataset `name` reads into `root`; what reading it must give."""
    return WRITERS[FOLDER_OF[name]](root)[name]
