import json

import pandas as pd
import pytest

from recsys_cli.data.sources import MovieLensSource, RecBoleSource, TableSource
from recsys_cli.errors import RecsysError

EVENTS = pd.DataFrame(
    {
        "uid": ["1", "1", "2"],
        "iid": ["10", "11", "10"],
        "ts": [5, 6, 7],
        "stars": [4.0, 3.0, 5.0],
        "name": ["Ten", "Eleven", "Ten"],
    }
)
COLUMNS = {"user": "uid", "item": "iid", "time": "ts", "rating": "stars", "item_text": "name"}


@pytest.mark.parametrize("ext", ["csv", "tsv", "jsonl", "parquet"])
def test_table_source_reads_every_format(tmp_path, ext):
    path = tmp_path / f"events.{ext}"
    if ext == "csv":
        EVENTS.to_csv(path, index=False)
    elif ext == "tsv":
        EVENTS.to_csv(path, index=False, sep="\t")
    elif ext == "jsonl":
        EVENTS.to_json(path, orient="records", lines=True)
    else:
        EVENTS.to_parquet(path)
    data = TableSource(str(path), columns=COLUMNS).load()
    assert list(data.interactions.columns) == ["user_id", "item_id", "timestamp", "rating"]
    assert data.interactions["rating"].tolist() == [4.0, 3.0, 5.0]
    assert dict(zip(data.items["item_id"].astype(str), data.items["title"])) == {"10": "Ten", "11": "Eleven"}


def test_table_source_hf_datasets_path_with_a_local_folder(tmp_path):
    folder = tmp_path / "hfdata"
    folder.mkdir()
    EVENTS.to_csv(folder / "train.csv", index=False)
    data = TableSource(str(folder), columns=COLUMNS, format="hf").load()
    assert len(data.interactions) == 3 and set(data.interactions["user_id"].astype(str)) == {"1", "2"}


def test_missing_column_names_the_column_and_the_fix(tmp_path):
    path = tmp_path / "events.csv"
    EVENTS.to_csv(path, index=False)
    with pytest.raises(RecsysError, match=r"column 'user_id' \(user\) not found.*data.source.columns.user"):
        TableSource(str(path), columns={"user": "user_id", "item": "iid", "time": "ts"}).load()


def test_empty_and_missing_files_are_user_errors(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(RecsysError, match="empty"):
        TableSource(str(empty), columns=COLUMNS).load()
    with pytest.raises(RecsysError, match="does not exist"):
        TableSource(str(tmp_path / "nope.csv"), columns=COLUMNS).load()


def test_recbole_atomic_files(tmp_path):
    (tmp_path / "toy.inter").write_text("user_id:token\titem_id:token\trating:float\ttimestamp:float\n1\t5\t4\t100\n")
    (tmp_path / "toy.item").write_text("item_id:token\tmovie_title:token_seq\tclass:token_seq\n5\tHeat\tAction Crime\n")
    data = RecBoleSource(str(tmp_path)).load()
    assert data.interactions.iloc[0].to_dict() == {"user_id": "1", "item_id": "5", "rating": 4.0, "timestamp": 100.0}
    assert data.items.iloc[0].to_dict() == {"item_id": "5", "title": "Heat", "text": "Action Crime"}


def test_movielens_variants_are_detected(tmp_path):
    ml100k = tmp_path / "ml-100k"
    ml100k.mkdir()
    (ml100k / "u.data").write_text("1\t10\t4\t881250949\n2\t10\t3\t881250950\n")
    genres = "|".join(["0"] * 19)
    (ml100k / "u.item").write_text(f"10|Heat (1995)|01-Jan-1995||http://x|{genres[:-1]}1\n", encoding="latin-1")
    data = MovieLensSource(str(ml100k)).load()
    assert len(data.interactions) == 2 and data.items["title"].tolist() == ["Heat (1995)"]
    assert data.items["text"].tolist() == ["Western"]

    ml1m = tmp_path / "ml-1m"
    ml1m.mkdir()
    (ml1m / "ratings.dat").write_text("1::10::5::978300760\n")
    (ml1m / "movies.dat").write_text("10::GoldenEye (1995)::Action|Thriller\n", encoding="latin-1")
    data = MovieLensSource(str(ml1m)).load()
    assert data.interactions["rating"].tolist() == [5.0] and data.items["text"].tolist() == ["Action Thriller"]

    latest = tmp_path / "ml-latest-small"
    latest.mkdir()
    (latest / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,10,4.5,964982703\n")
    (latest / "movies.csv").write_text('movieId,title,genres\n10,"Heat, The (1995)",Action|Crime\n')
    data = MovieLensSource(str(latest)).load()
    assert data.interactions["rating"].tolist() == [4.5] and data.items["title"].tolist() == ["Heat, The (1995)"]

    with pytest.raises(RecsysError, match="no MovieLens files"):
        MovieLensSource(str(tmp_path)).load()


def test_fingerprint_changes_with_content(tmp_path):
    path = tmp_path / "events.csv"
    EVENTS.to_csv(path, index=False)
    source = TableSource(str(path), columns=COLUMNS)
    before = source.fingerprint()
    EVENTS.iloc[:2].to_csv(path, index=False)
    assert source.fingerprint() != before
    assert json.dumps(before)  # a plain string, stored in meta.json
