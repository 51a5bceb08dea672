import pytest

from hiersrec.data.ingest.srgnn import read_srgnn_dir
from hiersrec.errors import DataError


@pytest.mark.data
def test_diginetica_counts_match_the_published_split(shared_data):
    data = read_srgnn_dir(shared_data / "diginetica" / "srgnn_cat")
    assert (data.train.n_sessions, data.test.n_sessions) == (186_670, 15_963)
    assert data.catalog.n_items == 43_097 and data.catalog.n_categories == 995
    assert data.test.target_positions().size == 60_858
    assert data.train.target_positions().size == 719_470


def test_small_folder_and_errors(tmp_path):
    (tmp_path / "item_category.tsv").write_text("item_id\tcategory_id\n10\t2\n11\t1\n12\t2\n")
    (tmp_path / "train_sessions.tsv").write_text("session_idx\titem_ids\n0\t10 11\n1\t12 10 11\n")
    (tmp_path / "test_sessions.tsv").write_text("session_idx\titem_ids\n0\t11 12\n")
    data = read_srgnn_dir(tmp_path, name="tiny")
    assert data.vocab.item_ids[1:] == ("10", "11", "12")
    assert data.train.to_lists() == [[1, 2], [3, 1, 2]]
    assert data.catalog.item_category.tolist() == [0, 2, 1, 2]  # categories sorted numerically: "1" -> 1

    (tmp_path / "test_sessions.tsv").write_text("session_idx\titem_ids\n0\t11 99\n")
    with pytest.raises(DataError, match="missing from item_category.tsv"):
        read_srgnn_dir(tmp_path)
    (tmp_path / "test_sessions.tsv").write_text("")
    with pytest.raises(DataError, match="empty"):
        read_srgnn_dir(tmp_path)
    (tmp_path / "test_sessions.tsv").write_text("session\titems\n0\t11\n")
    with pytest.raises(DataError, match="expected the header"):
        read_srgnn_dir(tmp_path)
