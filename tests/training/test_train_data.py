"""Reading the user's training pairs (stages/training/train_data.py)."""
import sys

import pytest

from stages.training.train_data import DataError, read_pairs, read_texts


def test_jsonl_with_custom_fields_and_tsv(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"en": "a cat", "de": "eine katze", "id": 1}\n\n{"en": "b", "de": "c"}\n')
    assert read_pairs(tmp_path / "a.jsonl", "en", "de") == [("a cat", "eine katze"), ("b", "c")]
    (tmp_path / "a.tsv").write_text("a cat\teine katze\nb\tc\n")
    assert read_pairs(tmp_path / "a.tsv") == [("a cat", "eine katze"), ("b", "c")]
    assert read_texts(tmp_path / "a.tsv", "target") == ["eine katze", "c"]


@pytest.mark.parametrize("name, text, needle", [
    ("x.jsonl", '{"source": "a"}\n', "x.jsonl:1: no text field 'target'"),
    ("x.jsonl", '{"source": "a", "target": "b"}\nnot json\n', "x.jsonl:2: not JSON"),
    ("x.tsv", "a\tb\tc\n", "x.tsv:1: expected 2 tab-separated columns, got 3"),
    ("x.tsv", "a\t \n", "x.tsv:1: empty target"),
    ("x.csv", "a,b\n", "unknown data format '.csv'"),
])
def test_bad_rows_name_file_and_line(tmp_path, name, text, needle):
    (tmp_path / name).write_text(text)
    with pytest.raises(DataError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        read_pairs(tmp_path / name)


def test_hf_dataset_dir(tmp_path):
    datasets = pytest.importorskip("datasets")  # the `datasets` extra
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"source": ["a", "b"], "target": ["c", "d"]})}
                         ).save_to_disk(str(tmp_path / "ds"))
    assert read_pairs(tmp_path / "ds") == [("a", "c"), ("b", "d")]
    with pytest.raises(DataError, match="no split 'dev'"):
        read_pairs(tmp_path / "ds", split="dev")


def test_hf_dataset_dir_without_the_package_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets -> ImportError
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "dataset_dict.json").write_text('{"splits": ["train"]}')
    with pytest.raises(DataError, match="needs the `datasets` package"):
        read_pairs(tmp_path / "ds")


def test_a_plain_folder_is_not_data(tmp_path):
    with pytest.raises(DataError, match="not a saved HF dataset"):
        read_pairs(tmp_path)
