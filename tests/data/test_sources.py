import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from recsys_cli.cli import app
from recsys_cli.data.preprocess import TEST, TRAIN, VALID, PreprocessConfig, prepare
from recsys_cli.data.sources import MovieLensSource, RecBoleSource, SeqTextSource, TableSource
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


# Users interleaved and items out of id order: only the line order says what came when.
SEQTXT = "u2 30\nu1 20\nu2 10\nu1 10\n\nu1 30\nu2 20\nu1 40\nu2 40\n"


def test_seqtxt_keeps_the_file_order_with_line_numbers_as_time(tmp_path):
    path = tmp_path / "Beauty.txt"
    path.write_text(SEQTXT.replace("u1 10", "u1\t  10 "))  # any whitespace separates
    data = SeqTextSource(str(path)).load()
    assert data.interactions.to_dict("list") == {
        "user_id": ["u2", "u1", "u2", "u1", "u1", "u2", "u1", "u2"],
        "item_id": ["30", "20", "10", "10", "30", "20", "40", "40"],
        "timestamp": [1, 2, 3, 4, 6, 7, 8, 9],  # line 5 is blank
    }
    assert data.items["title"].tolist() == data.items["item_id"].tolist()  # no titles: ids stand in

    processed, _ = prepare("seqtxt", SeqTextSource(str(path)), PreprocessConfig(), tmp_path / "data")
    inter = processed.interactions
    item_ids = dict(zip(processed.items["item_idx"], processed.items["item_id"]))
    user_ids = dict(zip(processed.users["user_idx"], processed.users["user_id"]))
    sequences = {
        user_ids[u]: [(item_ids[i], s) for i, s in zip(rows["item_idx"], rows["split"])]
        for u, rows in inter.groupby("user_idx")
    }
    # Leave-one-out holds out each user's last two lines of the file.
    assert sequences == {
        "u1": [("20", TRAIN), ("10", TRAIN), ("30", VALID), ("40", TEST)],
        "u2": [("30", TRAIN), ("10", TRAIN), ("20", VALID), ("40", TEST)],
    }


def test_seqtxt_fingerprint_follows_the_content(tmp_path):
    path = tmp_path / "data.txt"
    path.write_text(SEQTXT)
    before = SeqTextSource(str(path)).fingerprint()
    path.write_text(SEQTXT.replace("u2 40", "u2 50"))
    assert SeqTextSource(str(path)).fingerprint() != before


@pytest.mark.parametrize(
    "content, message",
    [
        ("u1 10\nu1 11\nu2 10 5\n", "line 3 of"),  # three fields
        ("u1 10\nu1\nu2 10\n", "line 2 of"),  # one field
        ("u1 10 5 4\nu1 11\n", "line 1 of"),  # the first line decides nothing
        ("u1 10\nu1 11\nu2 1 2 3 4\n", "line 3 of"),
        ("", "is empty"),
        ("\n \n", "is empty"),
    ],
)
def test_seqtxt_malformed_and_empty_files_are_one_line_errors(tmp_path, workdir, content, message):
    path = tmp_path / "bad.txt"
    path.write_text(content)
    with pytest.raises(RecsysError, match=message):
        SeqTextSource(str(path)).load()
    result = CliRunner().invoke(app, ["preprocess", *workdir, "data=seqtxt", f"data.path={path}"])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def write_unisrec(folder, sequences: dict[str, list[str]], texts: dict[str, str], raw: dict[str, str]) -> None:
    """A dataset in the UniSRec layout, written by its published rules (histories cut to their last 50)."""
    header = "user_id:token\titem_id_list:token_seq\titem_id:token\n"
    train, valid, test = [header], [header], [header]
    for user, items in sequences.items():
        head = items[:-2]
        for back in range(1, len(head)):
            train.append(f"{user}\t{' '.join(head[:-back][-50:])}\t{head[-back]}\n")
        valid.append(f"{user}\t{' '.join(head[-50:])}\t{items[-2]}\n")
        test.append(f"{user}\t{' '.join(items[:-1][-50:])}\t{items[-1]}\n")
    for name, lines in (("train", train), ("valid", valid), ("test", test)):
        (folder / f"Shop.{name}.inter").write_text("".join(lines))
    (folder / "Shop.text").write_text("".join(f"{i}\t{t}\n" for i, t in texts.items()))
    (folder / "Shop.item2index").write_text("".join(f"{r}\t{i}\n" for i, r in raw.items()))


def test_the_unisrec_layout_gives_back_every_sequence_and_the_published_split(tmp_path, workdir):
    from recsys_cli.config import compose_config
    from recsys_cli.data.sources import UniSRecSource
    from recsys_cli.families.recommender import prepare_interactions

    long = [str(i % 7) for i in range(60)]  # longer than the 50 items a history row keeps
    sequences = {
        "0": long,
        "1": ["3", "4", "5"],
        "2": ["6", "1", "4"],
        "3": ["2", "5", "6", "0", "1"],
    }  # "1", "2": one training event
    texts = {str(i): f"item number {i}" for i in range(7)}
    raw = {str(i): f"B00{i}" for i in range(7)}
    write_unisrec(tmp_path, sequences, texts, raw)
    data = UniSRecSource(str(tmp_path)).load()
    for user, items in sequences.items():
        rebuilt = data.interactions[data.interactions["user_id"] == user].sort_values("timestamp")
        assert rebuilt["item_id"].tolist() == [raw[i] for i in items]
    assert dict(zip(data.items["item_id"], data.items["text"])) == {raw[i]: t for i, t in texts.items()}

    cfg = compose_config([*workdir, "data=unisrec", f"data.path={tmp_path}"])
    processed, _ = prepare_interactions(cfg)
    inter = processed.interactions.merge(processed.users, on="user_idx").merge(processed.items, on="item_idx")
    test = inter[inter["split"] == 2].set_index("user_id")["item_id"].to_dict()
    assert test == {user: raw[items[-1]] for user, items in sequences.items()}


def test_table_source_joins_text_columns_and_reads_amazon_style_metadata(tmp_path):
    from recsys_cli.data.sources import TableSource

    reviews = tmp_path / "reviews.jsonl"
    pd.DataFrame(
        {
            "reviewerID": ["u1", "u1", "u2"],
            "asin": ["a", "b", "a"],
            "unixReviewTime": [1, 2, 3],
            "summary": ["Five Stars", None, "Meh"],
            "reviewText": ["Love it", "Broke in a week", None],
        }
    ).to_json(reviews, orient="records", lines=True)
    meta = tmp_path / "meta.jsonl"
    pd.DataFrame(
        {
            "asin": ["a", "b"],
            "title": ["Gel pen", "Stapler"],
            "category": [["Office", "Pens"], []],
            "brand": ["Pilot", None],
        }
    ).to_json(meta, orient="records", lines=True)
    source = TableSource(
        str(reviews),
        columns={"user": "reviewerID", "item": "asin", "time": "unixReviewTime", "review": ["summary", "reviewText"]},
        items_path=str(meta),
        item_columns={"item": "asin", "title": "title", "text": ["title", "category", "brand"]},
    )
    data = source.load()
    assert data.interactions["review"].tolist() == ["Five Stars. Love it", "Broke in a week", "Meh"]
    assert data.items["text"].tolist() == ["Gel pen. Office Pens. Pilot", "Stapler"]
    assert data.items["title"].tolist() == ["Gel pen", "Stapler"]
