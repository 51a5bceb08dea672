"""RecBole atomic files: rebuilding sequences from augmented rows, plain interactions, .item, export."""

from __future__ import annotations

import numpy as np
import pytest

from hiersrec.data import recbole_export
from hiersrec.data.ingest import open_dataset
from hiersrec.data.ingest.recbole import read_recbole_dir
from hiersrec.data.prepared import PreparedDataset
from hiersrec.data.recbole_export import write_recbole
from hiersrec.data.sessions import SessionData
from hiersrec.errors import ArtifactError, DataError

HEADER = "user_id:token\titem_id_list:token_seq\titem_id:token\n"
# Leave-one-out with histories truncated to 2 items, rows newest first as in UniSRec's files.
# u1 = a b c d e (valid d, test e); u2 = p q r s t u (valid t, test u); u2's two length-2 train rows tie on
# length, so only the file's direction orders them.
TRAIN = ["u1\ta b\tc", "u1\ta\tb", "u2\tq r\ts", "u2\tp q\tr", "u2\tp\tq"]
VALID = ["u1\tb c\td", "u2\tr s\tt"]
TEST = ["u1\tc d\te", "u2\ts t\tu"]


def write_split_files(directory, train=TRAIN, valid=VALID, test=TEST, stem="toy"):
    directory.mkdir(parents=True, exist_ok=True)
    for split, rows in (("train", train), ("valid", valid), ("test", test)):
        (directory / f"{stem}.{split}.inter").write_text(HEADER + "".join(r + "\n" for r in rows))
    return directory


def decoded(dataset: PreparedDataset, sessions: SessionData) -> list[list[str]]:
    return [dataset.vocab.decode_items(s) for s in sessions.to_lists()]


def test_leave_one_out_sequences_rebuilt_from_truncated_rows(tmp_path):
    data = read_recbole_dir(write_split_files(tmp_path))
    assert data.name == "toy" and data.options["split_mode"] == "leave_one_out"
    # Items by first appearance in train, then valid, then test.
    assert data.vocab.item_ids == ("<pad>", "a", "b", "c", "p", "q", "r", "s", "d", "t", "e", "u")
    assert data.train.to_lists() == [[1, 2, 3], [4, 5, 6, 7]]
    assert data.valid.to_lists() == [[1, 2, 3, 8], [4, 5, 6, 7, 9]]
    assert data.test.to_lists() == [[1, 2, 3, 8, 10], [4, 5, 6, 7, 9, 11]]
    assert data.default_protocol == "last_item"
    assert data.options["test_items_unseen_in_train"] == 4  # d, e, t, u
    assert data.vocab.category_ids == ("<pad>", "unknown")
    assert data.options["items_without_category_unknown"] == 11


def test_oldest_first_files_give_the_same_sequences(tmp_path):
    data = read_recbole_dir(write_split_files(tmp_path, train=TRAIN[1::-1] + TRAIN[:1:-1]))
    assert data.train.to_lists() == [[1, 2, 3], [4, 5, 6, 7]]


def test_rows_that_are_not_prefixes_name_their_line(tmp_path):
    train = TRAIN[:2] + ["u2\tq x\ts"] + TRAIN[3:]
    with pytest.raises(DataError, match=r"toy.train.inter: line 4: the item_id_list of 'u2' is not the history"):
        read_recbole_dir(write_split_files(tmp_path, train=train))
    with pytest.raises(DataError, match="several valid or test rows"):
        read_recbole_dir(write_split_files(tmp_path / "b", test=TEST + ["u1\tc d e\tf"]))


def test_missing_fields_and_ambiguous_folders(tmp_path):
    directory = write_split_files(tmp_path)
    (directory / "toy.train.inter").write_text("user_id:token\titem_id:token\nu1\ta\n")
    with pytest.raises(DataError, match=r"toy.train.inter: missing field\(s\) \['item_id_list'\]; found"):
        read_recbole_dir(directory)
    write_split_files(tmp_path, stem="other")
    with pytest.raises(DataError, match=r"datasets \['other', 'toy'\]; pass the dataset name"):
        read_recbole_dir(directory)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no .inter file"):
        read_recbole_dir(tmp_path / "empty")


def test_plain_interactions_with_item_file(tmp_path):
    (tmp_path / "shop.inter").write_text(
        "user_id:token\titem_id:token\ttimestamp:float\n"
        "u1\tb\t20\nu2\tc\t5\nu1\ta\t10\nu1\tc\t30\nu2\ta\t7\nu1\td\t40\n"
    )
    (tmp_path / "shop.item").write_text(
        "item_id:token\tcategory:token\ttitle:token_seq\tbrand:token\tprice:float\n"
        "a\tx\tapple pie\tB1\t1.5\nb\ty\tbanana\t\t\nc\tx\tcarrot\tB2\t3\n"
    )
    data = read_recbole_dir(tmp_path)
    # u1 by time = a b c d: train [a, b], valid [a, b, c], test [a, b, c, d]; u2 = c a is too short to hold
    # out items and stays whole in train.
    assert decoded(data, data.train) == [["a", "b"], ["c", "a"]]
    assert decoded(data, data.valid) == [["a", "b", "c"]]
    assert decoded(data, data.test) == [["a", "b", "c", "d"]]
    assert data.train.timestamps.tolist() == [10, 20, 5, 7]
    assert data.vocab.category_ids == ("<pad>", "x", "y", "unknown")  # d has no .item row
    assert data.catalog.item_category.tolist() == [0, 1, 2, 1, 3]
    assert data.catalog.text == ("", "apple pie", "banana", "carrot", "")
    assert data.catalog.categorical["brand"].tolist() == [0, 1, 0, 2, 0]
    np.testing.assert_array_equal(data.catalog.numeric["price"], [np.nan, 1.5, np.nan, 3.0, np.nan])
    assert data.options["items_without_category_unknown"] == 1
    with pytest.raises(DataError, match=r"1 clicked items have no category \(first: \['d'\]\)"):
        read_recbole_dir(tmp_path, missing_category="error")
    with pytest.raises(DataError, match="'drop' does not apply to RecBole files"):
        read_recbole_dir(tmp_path, missing_category="drop")


def test_export_then_import_sessions_layout(tmp_path, tiny_shop):
    paths = write_recbole(tiny_shop, tmp_path / "synthetic", max_history=3)
    assert [p.name for p in paths] == [
        "synthetic.train.inter",
        "synthetic.valid.inter",
        "synthetic.test.inter",
        "synthetic.item",
        "synthetic.yaml",
    ]
    lines = paths[0].read_text().splitlines()
    first = tiny_shop.vocab.decode_items(tiny_shop.train.session(0)[:5])
    assert lines[0] == "session_id:token\titem_id_list:token_seq\titem_id:token"
    assert lines[1] == f"0\t{first[0]}\t{first[1]}"
    assert lines[4] == f"0\t{' '.join(first[1:4])}\t{first[4]}"  # history truncated to 3 items
    fit, valid = tiny_shop.validation_split(0.1)
    n_rows = [len(p.read_text().splitlines()) - 1 for p in paths[:3]]
    assert n_rows == [int((s.lengths - 1).sum()) for s in (fit, valid, tiny_shop.test)]
    assert "benchmark_filename: [train, valid, test]" in paths[4].read_text()
    back = read_recbole_dir(tmp_path / "synthetic")
    assert back.valid is None and back.options["source_valid_sessions"] == valid.n_sessions
    assert decoded(back, back.train) == decoded(tiny_shop, tiny_shop.train)
    assert decoded(back, back.test) == decoded(tiny_shop, tiny_shop.test)
    ids = back.vocab.encode_items(list(tiny_shop.vocab.item_ids[1:]))
    categories = back.vocab.decode_categories(back.catalog.item_category[ids])
    assert categories == tiny_shop.vocab.decode_categories(tiny_shop.catalog.item_category[1:])
    assert [back.catalog.text[i] for i in ids] == list(tiny_shop.catalog.text[1:])


def test_export_then_import_leave_one_out_layout(tmp_path):
    data = read_recbole_dir(write_split_files(tmp_path / "src"))
    write_recbole(data, tmp_path / "toy", max_history=1)
    assert (tmp_path / "toy" / "toy.valid.inter").read_text() == HEADER + "0\tc\td\n1\ts\tt\n"
    back = read_recbole_dir(tmp_path / "toy")
    assert open_dataset(tmp_path / "toy").test.to_lists() == back.test.to_lists()
    for split in ("train", "valid", "test"):
        assert decoded(back, getattr(back, split)) == decoded(data, getattr(data, split))
    broken = PreparedDataset(**{**data.__dict__, "valid": data.test})
    with pytest.raises(DataError, match="cannot be written as leave-one-out"):
        write_recbole(broken, tmp_path / "broken")


def test_export_replaces_an_earlier_export_whole_and_refuses_a_foreign_folder(tmp_path, tiny_shop, monkeypatch):
    out = tmp_path / "synthetic"
    write_recbole(tiny_shop, out, max_history=3)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    write_recbole(tiny_shop, out, max_history=1)
    assert sorted(p.name for p in out.iterdir()) == sorted(before)
    assert "MAX_ITEM_LIST_LENGTH: 1\n" in (out / "synthetic.yaml").read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["synthetic"]  # no temporary folder left beside it

    # A failure while writing leaves the earlier export as it was, and no temporary folder.
    monkeypatch.setattr(recbole_export, "_item_table", lambda dataset: (_ for _ in ()).throw(OSError("injected")))
    after_second = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(OSError, match="injected"):
        write_recbole(tiny_shop, out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == after_second
    assert [p.name for p in tmp_path.iterdir()] == ["synthetic"]

    (out / "notes.txt").write_text("keep")
    with pytest.raises(ArtifactError, match="other files than a RecBole export"):
        write_recbole(tiny_shop, out)
    assert (out / "notes.txt").read_text() == "keep"


@pytest.mark.data
def test_real_amazon_scientific(shared_data, tmp_path):
    data = open_dataset(shared_data / "amazon-scientific")
    assert data.options["source_format"] == "unisrec_amazon"
    assert (data.train.n_sessions, data.valid.n_sessions, data.test.n_sessions) == (8442, 8442, 8442)
    assert data.vocab.n_items == 4385
    assert data.vocab.n_categories == 26 and "unknown" in data.vocab.category_ids  # 25 level-2 + unknown
    assert data.options["items_without_category_unknown"] == 134
    # Valid = train + the valid item, test = valid + the test item, for every user.
    assert (data.valid.lengths == data.train.lengths + 1).all() and (data.test.lengths == data.valid.lengths + 1).all()
    first_test = (shared_data / "amazon-scientific" / "Scientific.test.inter").read_text().splitlines()[1].split("\t")
    index_to_asin = dict(
        line.split("\t")[::-1]
        for line in (shared_data / "amazon-scientific" / "Scientific.item2index").read_text().splitlines()
    )
    expected = [index_to_asin[t] for t in first_test[1].split()] + [index_to_asin[first_test[2]]]
    assert data.vocab.decode_items(data.test.session(0)) == expected
    assert data.vocab.item_ids[1] == "B00TNNWMXI"
    assert data.catalog.text[1].startswith("eSUN Bronze filament")
    brand = data.catalog.categorical["brand"]
    assert (brand[1:] == 0).sum() == 12  # items without a brand
    assert data.default_protocol == "last_item"
    write_recbole(data, tmp_path / "sci")
    back = read_recbole_dir(tmp_path / "sci")
    assert decoded(back, back.test) == decoded(data, data.test)


def test_export_settings_are_what_recbole_accepts_for_its_default_sequential_models_issue_9(tmp_path):
    # RecBole 1.2.1 refuses the default SASRec/GRU4Rec (loss_type CE) unless train_neg_sample_args is None.
    data = read_recbole_dir(write_split_files(tmp_path / "src"))
    write_recbole(data, tmp_path / "toy", max_history=2)
    text = (tmp_path / "toy" / "toy.yaml").read_text()
    assert text == (
        "# RecBole settings for the files hiersrec wrote from dataset 'toy' (fingerprint not saved).\n"
        "# Protocol: last_item. RecBole reads <data_path>/toy/toy.*.inter: keep these files\n"
        "# in a folder named toy and set data_path to its parent.\n"
        "dataset: toy\n"
        "USER_ID_FIELD: user_id\n"
        "ITEM_ID_FIELD: item_id\n"
        "LIST_SUFFIX: _list\n"
        "MAX_ITEM_LIST_LENGTH: 2\n"
        "load_col:\n"
        "  inter: [user_id, item_id_list, item_id]\n"
        "alias_of_item_id: [item_id_list]\n"
        "benchmark_filename: [train, valid, test]\n"
        "# RecBole 1.2 refuses negative sampling with its sequential models' default cross-entropy loss.\n"
        "train_neg_sample_args: ~\n"
    )
    yaml = pytest.importorskip("yaml")
    settings = yaml.safe_load(text)
    assert "train_neg_sample_args" in settings and settings["train_neg_sample_args"] is None


GENRES = "item_id:token\tgenre:token_seq\tstyle:token\na\tpop rock\tloud\nb\tjazz\tsoft\nc\tpop\tloud\nd\t\t\n"


def _genre_folder(directory):
    directory.mkdir()
    rows = "".join(f"u{u}\t{item}\t{10 * u + k}\n" for u in range(3) for k, item in enumerate("abcd"))
    (directory / "shop.inter").write_text("session_id:token\titem_id:token\ttimestamp:float\n" + rows)
    (directory / "shop.item").write_text(GENRES)
    return directory


def _categories(data: PreparedDataset) -> dict[str, str]:
    names = data.vocab.decode_categories(data.catalog.item_category[1:])
    return dict(zip(data.vocab.item_ids[1:], names, strict=True))


def test_category_field_of_the_item_file_issue_9(tmp_path):
    folder = _genre_folder(tmp_path / "shop")
    # Without the option no field is a category field: every item is 'unknown', as before.
    assert set(_categories(read_recbole_dir(folder)).values()) == {"unknown"}
    for field in ("genre", "genre:token_seq"):  # a token_seq field gives its first token
        data = read_recbole_dir(folder, category_field=field)
        assert _categories(data) == {"a": "pop", "b": "jazz", "c": "pop", "d": "unknown"}
        assert data.options["items_without_category_unknown"] == 1
        assert "genre" not in data.catalog.categorical
    assert _categories(read_recbole_dir(folder, category_field="style")) == {
        "a": "loud",
        "b": "soft",
        "c": "loud",
        "d": "unknown",
    }
    with pytest.raises(
        DataError, match=r"shop.item: no field 'colour' to take categories from; found \['item_id:token'"
    ):
        read_recbole_dir(folder, category_field="colour")
    (folder / "shop.item").unlink()
    with pytest.raises(DataError, match="shop.item: file not found; the category field 'genre' is read from it"):
        read_recbole_dir(folder, category_field="genre")


def test_prepare_recbole_with_a_category_column_issue_9(tmp_path, capsys):
    from hiersrec.cli import ExitStatus, main

    folder = _genre_folder(tmp_path / "shop")
    args = ["data", "prepare", "--source", "recbole", "-i", str(folder), "--out", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--category-column", "genre:token_seq"])
    assert exit_info.value.code == ExitStatus.OK, capsys.readouterr().err
    assert _categories(open_dataset(tmp_path / "out"))["a"] == "pop"
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "prepare", "--help"])
    help_text = " ".join(capsys.readouterr().out.replace("│", " ").split())  # rich draws boxes around help
    assert "recbole: a token field as it is, a token_seq field such as genre:token_seq by its first token" in help_text
