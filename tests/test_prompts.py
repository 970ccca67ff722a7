"""Prompt files: JSON and CSV image-score pairs, their encodings, and the scores they may hold."""
from __future__ import annotations

import json

import pytest
from conftest import write_image

from PromptIQA.data.prompts import read_prompt_file
from PromptIQA.utils.errors import UserError

SCORES = (0.1, 0.55, 0.9)


@pytest.fixture
def images(tmp_path):
    """Three ISP images beside the prompt files; the names need more than ASCII."""
    names = ["ciel.png", "été.png", "夜.png"]
    for seed, name in enumerate(names):
        write_image(tmp_path / name, seed=seed)
    return names


def _csv_text(names) -> str:
    return "path,score\n" + "".join(f"{name},{score}\n" for name, score in zip(names, SCORES))


def _json_text(names) -> str:
    return json.dumps({"isp": [[name, score] for name, score in zip(names, SCORES)]}, ensure_ascii=False)


@pytest.mark.parametrize("suffix, text", [(".csv", _csv_text), (".json", _json_text)])
def test_utf8_with_and_without_byte_order_mark(tmp_path, images, suffix, text):
    plain, with_bom = tmp_path / f"plain{suffix}", tmp_path / f"bom{suffix}"
    plain.write_text(text(images), encoding="utf-8")
    with_bom.write_text(text(images), encoding="utf-8-sig")
    read = read_prompt_file(plain)
    assert read == read_prompt_file(with_bom)
    assert read.paths == tuple(str((tmp_path / name).resolve()) for name in images) and read.scores == SCORES


@pytest.mark.parametrize("suffix, text", [(".csv", _csv_text), (".json", _json_text)])
def test_non_utf8_file_is_named_with_the_fix(tmp_path, images, suffix, text):
    path = tmp_path / f"latin1{suffix}"
    path.write_text(text(images[:2]), encoding="latin-1")  # "été" becomes bytes that are not UTF-8
    with pytest.raises(UserError, match="not UTF-8 text.*save it as UTF-8") as err:
        read_prompt_file(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("value", [True, False])
def test_booleans_are_not_scores(tmp_path, images, value):
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"isp": [[images[0], 0.5], [images[1], value]]}))
    with pytest.raises(UserError, match=f"ISP row 2: score {value} is not a number") as err:
        read_prompt_file(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("name", ["prompts.json", "prompts.csv"])
def test_folder_named_like_a_prompt_file(tmp_path, name):
    (tmp_path / name).mkdir()
    with pytest.raises(UserError, match="is a folder, not a prompt file") as err:
        read_prompt_file(tmp_path / name)
    assert str(tmp_path / name) in str(err.value)


def test_numbers_given_as_text_still_count(tmp_path, images):
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"isp": [[images[0], "0.25"], [images[1], 1]]}))
    assert read_prompt_file(path).scores == (0.25, 1.0)


@pytest.mark.parametrize("name, text, message", [
    ("long.json", lambda rows: '{"isp": [["%s", %s]]}' % (rows[0], "9" * 5000), "a number too long to read"),
    ("deep.json", lambda rows: "[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ("wide.csv", lambda rows: "path,score\n%s,%s\n" % (rows[0], "x" * 131_073), "line 2: not a readable CSV row"),
    ("long.csv", lambda rows: "path,score\n%s,%s\n" % (rows[0], "9" * 5000), "is outside the score range"),
], ids=["5000-digit-json", "deep-json", "huge-csv-field", "5000-digit-csv"])
def test_hostile_prompt_files_are_user_errors(tmp_path, images, name, text, message):
    path = tmp_path / name
    path.write_text(text(images))
    with pytest.raises(UserError, match=message) as err:
        read_prompt_file(path)
    assert str(err.value).startswith(str(path)) and len(str(err.value)) < 400
