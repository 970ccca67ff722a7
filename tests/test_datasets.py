"""Dataset readers, labels, split units, the published split and dataset_info checks (docs/datasets.md)."""
from __future__ import annotations

import json
import math
import random
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from dataset_fixtures import FOLDER_OF, WRITERS, write_csv, write_dataset, write_image, write_xlsx

from PromptIQA.data import (
    DATASET_NAMES,
    DEFAULT_DATASET_INFO,
    Record,
    canonical_name,
    check_datasets,
    format_summary,
    load_dataset_info,
    read_dataset,
    split_records,
    summarize,
)
from PromptIQA.data.labels import read_mat
from PromptIQA.utils.errors import UserError

TWELVE = ("live", "csiq", "tid2013", "kadid", "bid", "spaq", "livec", "koniq10k", "gfiqa_20k", "agiqa_3k",
          "aigciqa2023", "uwiqa")
SYNTHETIC = ("live", "csiq", "tid2013", "kadid")


def published_train_units(unit_count: int, seed: int, train_ratio: float = 0.8) -> set[int]:
    """The published recipe, verbatim, on the global generator (whose state is put back)."""
    state = random.getstate()
    idx = list(range(unit_count))
    random.seed(seed)
    random.shuffle(idx)
    random.setstate(state)
    return set(idx[:round(train_ratio * unit_count)])


def info_file(tmp_path: Path, entries: dict) -> Path:
    path = tmp_path / "dataset_info.json"
    path.write_text(json.dumps(entries))
    return path


@contextmanager
def expect_error(*fragments: str):
    """pytest.raises(UserError), and the message must contain every fragment."""
    with pytest.raises(UserError) as error:
        yield error
    missing = [f for f in fragments if f not in str(error.value)]
    assert not missing, f"{missing} not in the message:\n{error.value}"


# ---- every reader: paths, labels (published constants), units --------------------------------------

@pytest.mark.parametrize("name", sorted(FOLDER_OF))
def test_reader_gives_paths_labels_and_units(tmp_path, name):
    expected = write_dataset(name, tmp_path)
    records = read_dataset(name, tmp_path)
    assert [r.path for r in records] == [str(tmp_path / p) for p in expected.paths]
    assert [r.label for r in records] == pytest.approx(expected.labels, abs=1e-12)
    if expected.references is None:
        assert [r.unit for r in records] == list(range(len(records)))
    else:
        numbers = {name: u for u, name in enumerate(sorted(set(expected.references)))}
        assert [r.unit for r in records] == [numbers[ref] for ref in expected.references]
    assert all(Path(r.path).is_absolute() and Path(r.path).is_file() for r in records)


def test_every_one_of_the_twelve_has_a_fixture_and_a_name():
    assert set(TWELVE) == set(WRITERS)
    assert set(TWELVE) | {"uqiqa", "csv"} <= set(DATASET_NAMES)
    assert list(DATASET_NAMES) == sorted(DATASET_NAMES)


def test_live_skips_undistorted_copies_and_numbers_references_by_sorted_name(tmp_path):
    write_dataset("live", tmp_path)
    records = read_dataset("live", tmp_path)
    assert len(records) == 6  # of 982 entries, 976 have orgs == 1
    assert [Path(r.path).relative_to(tmp_path).as_posix() for r in records][2:4] == ["jpeg/img5.bmp", "wn/img1.bmp"]
    # bikes < buildings < studentsculpture < womanhat
    assert [r.unit for r in records] == [2, 0, 1, 0, 3, 2]


def test_live_needs_its_982_entries(tmp_path):
    write_dataset("live", tmp_path)
    scipy.io.savemat(tmp_path / "dmos_realigned.mat", {"dmos": np.ones((1, 981)), "orgs": np.zeros((1, 981))})
    with expect_error("live", "dmos_realigned.mat", "981", "982"):
        read_dataset("live", tmp_path)


def test_livec_skips_the_seven_practice_images(tmp_path):
    write_dataset("livec", tmp_path)
    records = read_dataset("livec", tmp_path)
    assert len(records) == 4
    assert not any("trainingImages" in r.path for r in records)
    assert records[0].path.endswith("Images/100.bmp") and records[0].label == pytest.approx(0.629)


def test_tid2013_reference_is_case_insensitive(tmp_path):
    write_dataset("tid2013", tmp_path)
    records = {Path(r.path).name: r.unit for r in read_dataset("tid2013", tmp_path)}
    assert records["I02_03_4.bmp"] == records["i02_24_5.bmp"] == 1
    assert records["i01_01_1.bmp"] == 0 and records["i25_01_1.bmp"] == 2


def test_extra_criteria_read_the_same_images_with_their_own_column(tmp_path):
    write_dataset("spaq", tmp_path)
    quality, colorfulness = read_dataset("spaq", tmp_path), read_dataset("spaq_colorfulness", tmp_path)
    assert [r.path for r in quality] == [r.path for r in colorfulness]
    assert [r.label for r in colorfulness] == pytest.approx([0.612, 0.0, 0.333])


def test_alias_uqiqa_reads_uwiqa(tmp_path):
    write_dataset("uwiqa", tmp_path)
    assert canonical_name("uqiqa") == "uwiqa" and canonical_name("live") == "live"
    assert read_dataset("uqiqa", tmp_path) == read_dataset("uwiqa", tmp_path)


# ---- the published split ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", TWELVE)
@pytest.mark.parametrize("seed", [0, 2024])
def test_split_follows_the_published_formula(tmp_path, name, seed):
    write_dataset(name, tmp_path)
    records = read_dataset(name, tmp_path)
    train_units = published_train_units(len({r.unit for r in records}), seed)
    train, test = split_records(records, seed)
    assert train == [r for r in records if r.unit in train_units]
    assert test == [r for r in records if r.unit not in train_units]


@pytest.mark.parametrize("name", SYNTHETIC)
def test_synthetic_sets_never_share_a_reference_across_the_split(tmp_path, name):
    expected = write_dataset(name, tmp_path)
    records = read_dataset(name, tmp_path)
    reference_of = dict(zip((r.path for r in records), expected.references))
    for seed in range(20):
        train, test = split_records(records, seed)
        assert train and test
        assert not {reference_of[r.path] for r in train} & {reference_of[r.path] for r in test}


def test_split_on_many_units_matches_the_global_seed_recipe_and_keeps_global_state():
    records = [Record(f"/x/{i}.png", i / 600, i * 37 % 137) for i in range(600)]  # all 137 units, interleaved
    position = {r.path: i for i, r in enumerate(records)}
    state = random.getstate()
    for seed in (1, 2024, 99991):
        for ratio in (0.8, 0.5, 0.7):
            train, test = split_records(records, seed, ratio)
            train_units = published_train_units(137, seed, ratio)
            assert {r.unit for r in train} == train_units and not {r.unit for r in test} & train_units
            assert len(train) + len(test) == len(records)
            for side in (train, test):
                assert [position[r.path] for r in side] == sorted(position[r.path] for r in side)
    assert random.getstate() == state


def test_split_of_image_units_is_sized_by_round_of_the_ratio():
    records = [Record(f"/x/{i}.png", 0.5, i) for i in range(29)]
    train, test = split_records(records, 3)
    assert (len(train), len(test)) == (23, 6)  # round(0.8 * 29) = 23
    with expect_error("train_ratio", "1.5"):
        split_records(records, 3, 1.5)


# ---- the csv reader for the user's own data --------------------------------------------------------

def write_user_csv(folder: Path, rows: list[list], header=("path", "score")) -> Path:
    for row in rows:
        write_image(folder / row[0])
    path = folder / "labels.csv"
    write_csv(path, list(header), rows)
    return path


def test_csv_reader_maps_the_range_and_direction(tmp_path):
    path = write_user_csv(tmp_path, [["a.png", 2.0], ["sub/b.png", 10.0], ["c.png", 4.0]])
    higher = read_dataset("csv", path, score_min=2, score_max=10)
    assert [r.label for r in higher] == pytest.approx([0.0, 1.0, 0.25])
    assert [r.path for r in higher] == [str(tmp_path / p) for p in ("a.png", "sub/b.png", "c.png")]
    assert [r.unit for r in higher] == [0, 1, 2]
    lower = read_dataset("csv", tmp_path, score_min=2, score_max=10, higher_is_better=False)  # folder root
    assert [r.label for r in lower] == pytest.approx([1.0, 0.0, 0.75])


def test_csv_reader_defaults_to_scores_in_0_1_and_names_a_row_out_of_range(tmp_path):
    path = write_user_csv(tmp_path, [["a.png", 0.2], ["b.png", 7]])
    with expect_error("labels.csv line 3", "outside [0, 1]", "score_min/score_max"):
        read_dataset("csv", path)


def test_csv_reader_groups_by_unit_column(tmp_path):
    path = write_user_csv(tmp_path, [["a.png", 0.1, "scene_b"], ["b.png", 0.2, "scene_a"], ["c.png", 0.3, "scene_b"]],
                          header=("path", "score", "unit"))
    assert [r.unit for r in read_dataset("csv", path)] == [1, 0, 1]


def test_csv_reader_rejects_bad_options_and_columns(tmp_path):
    path = write_user_csv(tmp_path, [["a.png", 0.2]])
    with expect_error("score_range", "score_min, score_max, higher_is_better"):
        read_dataset("csv", path, score_range=[0, 1])
    with expect_error("score_max", "larger than score_min"):
        read_dataset("csv", path, score_min=5, score_max=5)
    with expect_error("higher_is_better", "true or false"):
        read_dataset("csv", path, higher_is_better="no")
    write_csv(path, ["image", "score"], [["a.png", 0.2]])
    with expect_error(str(path), "no column 'path'", "columns: image, score"):
        read_dataset("csv", path)
    with expect_error("no options", "score_min"):
        read_dataset("bid", tmp_path, score_min=0)


@pytest.mark.parametrize("option", ["score_min", "score_max"])
@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_csv_option_is_reported_once(tmp_path, option, value):
    path = write_user_csv(tmp_path, [[f"{i}.png", 0.5] for i in range(30)])
    info = info_file(tmp_path, {"mine": {"root": str(path), "reader": "csv", "options": {option: "VALUE"}}})
    info.write_text(info.read_text().replace('"VALUE"', value))  # the JSON extensions Python reads as floats
    with expect_error("1 dataset problem(s)", f"mine: option {option}=", "must be a finite number") as error:
        check_datasets(["mine"], load_dataset_info(info))
    assert str(error.value).count("\n") == 1


def test_same_image_twice_is_a_duplicate_naming_its_rows(tmp_path):
    path = write_user_csv(tmp_path, [["a.png", 0.1, "s1"], ["b.png", 0.2, "s2"], ["./a.png", 0.9, "s3"],
                                     ["c.png", 0.4, "s3"]], header=("path", "score", "unit"))
    with expect_error(f"{path} lists the image {tmp_path / 'a.png'} 2 times (line 2, line 4)", "list each image once"):
        read_dataset("csv", path)


def test_published_reader_reports_a_duplicate_too(tmp_path):
    write_dataset("csiq", tmp_path)
    with open(tmp_path / "csiq_label.txt", "a") as file:
        file.write("1600.BLUR.2.png 0.3\n")
    with expect_error("csiq_label.txt lists the image", "1600.BLUR.2.png 2 times (line 2, line 7)"):
        read_dataset("csiq", tmp_path)


@pytest.mark.parametrize("units", [1, 2])
def test_too_few_split_units_for_a_test_split_are_refused(tmp_path, units):
    rows = [[f"{i}.png", i / 10, f"scene{i % units}"] for i in range(6)]
    path = write_user_csv(tmp_path, rows, header=("path", "score", "unit"))
    info = load_dataset_info(info_file(tmp_path, {"mine": {"root": str(path), "reader": "csv"}}))
    with expect_error(f"mine: only {units} split unit(s)", "no test images", "at least 3 units"):
        check_datasets(["mine"], info)
    write_csv(path, ["path", "score", "unit"], [row[:2] + [f"scene{i % 3}"] for i, row in enumerate(rows)])
    assert split_records(check_datasets(["mine"], info)["mine"], seed=5)[1]


# ---- text encodings ----------------------------------------------------------------------------------

def test_csv_reader_names_a_label_file_that_is_not_utf8(tmp_path):
    path = write_user_csv(tmp_path, [["a.png", 0.5]])
    path.write_bytes("path,score\ncaf\u00e9.png,0.5\n".encode("latin-1"))
    with expect_error(f"csv: {path} is not UTF-8 text", "save it as UTF-8"):
        read_dataset("csv", path)


@pytest.mark.parametrize("name, file", [("kadid", "dmos.csv"), ("csiq", "csiq_label.txt")])
def test_published_label_file_that_is_not_utf8_is_named(tmp_path, name, file):
    write_dataset(name, tmp_path)
    text = (tmp_path / file).read_text()
    (tmp_path / file).write_bytes(text.replace(".png", "\u00e9.png", 1).encode("cp1252"))
    with expect_error(f"{name}: {tmp_path / file} is not UTF-8 text", "save it as UTF-8"):
        read_dataset(name, tmp_path)


def test_utf8_label_file_with_byte_order_mark_is_read(tmp_path):
    path = write_user_csv(tmp_path, [["a.png", 0.5], ["b.png", 0.25]])
    path.write_text(path.read_text(), encoding="utf-8-sig")
    assert [r.label for r in read_dataset("csv", path)] == [0.5, 0.25]


def test_dataset_info_that_is_not_utf8_is_named(tmp_path):
    path = tmp_path / "dataset_info.json"
    path.write_bytes('{"live": ["/donn\u00e9es/LIVE", 29]}'.encode("latin-1"))
    with expect_error(str(path), "not UTF-8 text", "save it as UTF-8"):
        load_dataset_info(path)


# ---- error paths: names, roots, label files, labels ------------------------------------------------

def test_unknown_name_suggests_the_closest(tmp_path):
    with expect_error("unknown dataset 'koniq'", "did you mean 'koniq10k'"):
        read_dataset("koniq", tmp_path)
    with expect_error("did you mean 'tid2013'"):
        canonical_name("tid2031")


def test_wrong_root(tmp_path):
    with expect_error("csiq", str(tmp_path / "CSIQ"), "not an existing folder", "csiq_label.txt"):
        read_dataset("csiq", tmp_path / "CSIQ")


def test_missing_label_file(tmp_path):
    write_dataset("kadid", tmp_path)
    (tmp_path / "dmos.csv").unlink()
    with expect_error("kadid", str(tmp_path / "dmos.csv"), "not found", "KADID-10k dmos.csv"):
        read_dataset("kadid", tmp_path)


def test_wrong_csv_column(tmp_path):
    write_dataset("kadid", tmp_path)
    write_csv(tmp_path / "dmos.csv", ["dist_img", "ref_img", "mos", "var"], [["I01_01_01.png", "I01.png", 3, 0]])
    with expect_error("kadid", "dmos.csv has no column 'dmos'", "columns: dist_img, ref_img, mos, var",
                      "expected the KADID-10k dmos.csv"):
        read_dataset("kadid", tmp_path)


def test_wrong_xlsx_column(tmp_path):
    write_dataset("bid", tmp_path)
    write_xlsx(tmp_path / "DatabaseGrades.xlsx", ("Image Number",), [(1,), (2,)])
    with expect_error("bid", "DatabaseGrades.xlsx has no column B", "A 'Image Number'"):
        read_dataset("bid", tmp_path)


def test_wrong_mat_variable(tmp_path):
    write_dataset("livec", tmp_path)
    scipy.io.savemat(tmp_path / "Data/AllMOS_release.mat", {"MOS": np.ones((1, 11))})
    with expect_error("livec", "AllMOS_release.mat has no variable 'AllMOS_release'", "variables: MOS"):
        read_dataset("livec", tmp_path)


def test_label_files_of_different_lengths(tmp_path):
    write_dataset("livec", tmp_path)
    scipy.io.savemat(tmp_path / "Data/AllMOS_release.mat", {"AllMOS_release": np.full((1, 10), 50.0)})
    with expect_error("livec", "AllMOS_release.mat has 10", "AllImages_release.mat has 11"):
        read_dataset("livec", tmp_path)


def test_txt_line_with_too_few_fields(tmp_path):
    write_dataset("csiq", tmp_path)
    with open(tmp_path / "csiq_label.txt", "a") as file:
        file.write("1600.AWGN.2.png\n")
    with expect_error("csiq", "csiq_label.txt line 7 has 1 field(s), not 2"):
        read_dataset("csiq", tmp_path)


def test_mat_reader_accepts_row_and_column_vectors_only(tmp_path):
    path = tmp_path / "v.mat"
    scipy.io.savemat(path, {"row": np.array([[1.0, 2.0, 3.0]]), "col": np.array([[4.0], [5.0], [6.0]]),
                            "grid": np.ones((2, 3))})
    rows = read_mat(path, ["row", "col"], "demo", "a test file")
    assert [r.values for r in rows] == [(1.0, 4.0), (2.0, 5.0), (3.0, 6.0)]
    assert rows[2].where == "entry 3"
    with expect_error("demo", "'grid' has shape 2x3", "1xN or Nx1"):
        read_mat(path, ["grid"], "demo", "a test file")


def test_nan_label_names_file_and_row(tmp_path):
    write_dataset("kadid", tmp_path)
    rows = [["I01_01_01.png", "I01.png", 3.0, 0.1], ["I01_01_02.png", "I01.png", "nan", 0.1]]
    write_csv(tmp_path / "dmos.csv", ["dist_img", "ref_img", "dmos", "var"], rows)
    with expect_error(f"kadid: {tmp_path / 'dmos.csv'} line 3", "score is 'nan'"):
        read_dataset("kadid", tmp_path)


def test_empty_xlsx_score_names_the_row(tmp_path):
    write_dataset("uwiqa", tmp_path)
    write_xlsx(tmp_path / "IQA_Value.xlsx", ("Image", "Score"), [(1, 0.5), (2, None), (3, "bad")])
    with expect_error("IQA_Value.xlsx row 3: score None is not a number", "IQA_Value.xlsx row 4: score 'bad'"):
        read_dataset("uwiqa", tmp_path)


def test_out_of_range_label_names_file_and_row(tmp_path):
    write_dataset("tid2013", tmp_path)
    (tmp_path / "mos_with_names.txt").write_text("5.0 i01_01_1.bmp\n9.5 i01_01_2.bmp\n")
    with expect_error(f"tid2013: {tmp_path / 'mos_with_names.txt'} line 2", "score 9.5 gives label 1.056",
                      "outside [0, 1]", "/ 9"):
        read_dataset("tid2013", tmp_path)


def test_bad_image_number_names_the_row(tmp_path):
    write_dataset("bid", tmp_path)
    write_xlsx(tmp_path / "DatabaseGrades.xlsx", ("Image Number", "Average Rating"), [(1, 2.0), (2.5, 3.0)])
    with expect_error("DatabaseGrades.xlsx row 3", "image number 2.5 is not a whole number"):
        read_dataset("bid", tmp_path)


# ---- dataset_info.json and the combined check -------------------------------------------------------

def test_shipped_dataset_info_lists_the_twelve_published_names():
    info = load_dataset_info(DEFAULT_DATASET_INFO)
    assert {canonical_name(name) for name in info} == set(TWELVE)
    assert "uqiqa" in info
    units = {name: entry.units for name, entry in info.items()}
    assert units["live"] == 29 and units["csiq"] == 30 and units["tid2013"] == 25 and units["kadid"] == 81
    assert units["livec"] == 1162 and units["uqiqa"] == 890


def test_check_datasets_reads_entries_aliases_criteria_and_custom_csv(tmp_path):
    write_dataset("uwiqa", tmp_path / "UWIQA")
    write_dataset("spaq", tmp_path / "SPAQ")
    csv_path = write_user_csv(tmp_path / "mine", [["a.png", 1], ["b.png", 5], ["c.png", 2]])
    info = load_dataset_info(info_file(tmp_path, {
        "uqiqa": [str(tmp_path / "UWIQA"), 4],
        "spaq": {"root": str(tmp_path / "SPAQ"), "units": 3},
        "my_photos": {"root": str(csv_path), "reader": "csv", "options": {"score_min": 1, "score_max": 5}},
    }))
    found = check_datasets(["uwiqa", "spaq_colorfulness", "my_photos", "uqiqa"], info)
    assert list(found) == ["uwiqa", "spaq_colorfulness", "my_photos", "uqiqa"]
    assert found["uwiqa"] == found["uqiqa"] == read_dataset("uwiqa", tmp_path / "UWIQA")
    assert found["spaq_colorfulness"] == read_dataset("spaq_colorfulness", tmp_path / "SPAQ")
    assert [r.label for r in found["my_photos"]] == [0.0, 1.0, 0.25]


def test_check_reports_missing_images_first_few_and_count(tmp_path):
    write_dataset("aigciqa2023", tmp_path)
    for i in range(4):
        (tmp_path / f"Image/allimg/{i}.png").unlink()
    scores = np.full((9, 1), 50.0)
    scipy.io.savemat(tmp_path / "DATA/MOS/mosz1.mat", {"MOSz": scores})
    info = load_dataset_info(info_file(tmp_path, {"aigciqa2023": [str(tmp_path), 9]}))
    with expect_error(f"aigciqa2023: {tmp_path / 'Image/allimg/0.png'} not found",
                      "Image/allimg/4.png not found", "9 of 9 images not found") as error:
        check_datasets(["aigciqa2023"], info)
    assert "allimg/5.png" not in str(error.value)
    assert check_datasets(["aigciqa2023"], info, check_images=False)["aigciqa2023"][8].label == 0.5


def test_check_reports_every_problem_of_every_dataset_at_once(tmp_path):
    write_dataset("csiq", tmp_path / "CSIQ")
    (tmp_path / "CSIQ/dst_imgs_all/1600.BLUR.2.png").unlink()
    write_dataset("tid2013", tmp_path / "TID2013")
    (tmp_path / "TID2013/mos_with_names.txt").write_text("5.0 i01_01_1.bmp\n12 i01_01_2.bmp\n")
    write_dataset("kadid", tmp_path / "KADID")
    write_dataset("gfiqa_20k", tmp_path / "GFIQA")
    info = load_dataset_info(info_file(tmp_path, {
        "live": ["/path/to/LIVE", 29],
        "csiq": [str(tmp_path / "CSIQ"), 3],
        "tid2013": [str(tmp_path / "TID2013"), 1],
        "kadid": [str(tmp_path / "KADID"), 81],
        "gfiqa_20k": [str(tmp_path / "GFIQA"), 3],
    }))
    with expect_error("live: dataset root /path/to/LIVE",
                      f"csiq: {tmp_path / 'CSIQ/dst_imgs_all/1600.BLUR.2.png'} not found",
                      "tid2013: ", "mos_with_names.txt line 2", "kadid: ", "gives 81 split units",
                      "give 3", "koniq: unknown dataset (did you mean 'koniq10k'?)",
                      "bid: no entry in", "6 dataset problem(s)") as error:
        check_datasets(["live", "csiq", "tid2013", "kadid", "gfiqa_20k", "koniq", "bid"], info)
    assert not any(line.startswith("gfiqa_20k") for line in str(error.value).splitlines())


def test_check_reports_paths_that_are_not_images(tmp_path):
    path = write_user_csv(tmp_path, [["a.png", 0.5], ["b.png", 0.7]])
    (tmp_path / "notes.txt").write_text("not an image")
    write_csv(path, ["path", "score"], [["a.png", 0.5], ["b.png", 0.7], ["notes.txt", 0.2]])
    info = load_dataset_info(info_file(tmp_path, {"mine": {"root": str(path), "reader": "csv"}}))
    with expect_error(f"mine: {tmp_path / 'notes.txt'} is not an image file", "1 dataset problem(s)"):
        check_datasets(["mine"], info)


def test_custom_entry_without_reader_is_reported(tmp_path):
    info = load_dataset_info(info_file(tmp_path, {"photos": {"root": str(tmp_path)}}))
    with expect_error("photos:", "not a known dataset", '"reader": "csv"'):
        check_datasets(["photos"], info)


@pytest.mark.parametrize("content, fragments", [
    ("{not json", ("not valid JSON", "line 1")),
    ('["live"]', ("expected a JSON object",)),
    ('{"live": ["/path/to/LIVE"]}', ('entry "live"', '["/path/to/root", number_of_split_units]')),
    ('{"live": ["/path/to/LIVE", "29"]}', ('entry "live"',)),
    ('{"kadid": {"path": "/x"}}', ('entry "kadid"', '"root"')),
    ('{"mine": {"root": "/x", "reader": "cvs"}}', ('entry "mine"', 'reader "cvs"', "did you mean 'csv'")),
])
def test_bad_dataset_info_names_file_and_key(tmp_path, content, fragments):
    path = tmp_path / "dataset_info.json"
    path.write_text(content)
    with expect_error(str(path), *fragments):
        load_dataset_info(path)


def test_missing_dataset_info_file(tmp_path):
    with expect_error(str(tmp_path / "nope.json"), "not found"):
        load_dataset_info(tmp_path / "nope.json")


# ---- summary -----------------------------------------------------------------------------------------

def test_summary_rows_and_table(tmp_path):
    write_dataset("kadid", tmp_path / "KADID")
    write_dataset("koniq10k", tmp_path / "KONIQ")
    records = {"kadid": read_dataset("kadid", tmp_path / "KADID"),
               "koniq10k": read_dataset("koniq10k", tmp_path / "KONIQ")}
    rows = summarize(records, seed=2024)
    kadid_train, kadid_test = split_records(records["kadid"], 2024)
    assert rows[0] == ("kadid", 4, len(kadid_train), len(kadid_test), 0.0, 0.8)
    assert rows[1].images == 3 and rows[1].train + rows[1].test == 3
    assert math.isclose(rows[1].label_min, 0.035) and rows[1].label_max == 1.0
    lines = format_summary(rows).splitlines()
    assert lines[0].split() == ["dataset", "images", "train", "test", "label", "min", "label", "max"]
    assert lines[1].split() == ["kadid", "4", str(len(kadid_train)), str(len(kadid_test)), "0.000", "0.800"]
    assert len({len(line) for line in lines}) == 1
