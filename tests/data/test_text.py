"""Text sources, cleaning, deduplication and splitting for the intent encoder (recsys_cli.data.text)."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys_cli.data.text import (
    Banking77Source,
    ClincSource,
    ReviewSource,
    SyntheticQueries,
    TableTextSource,
    TextSource,
    load_text_folder,
    prepare_text,
    prepare_text_data,
    text_folder,
)
from recsys_cli.errors import RecsysError
from tests.conftest import shared_dataset


class FrameSource(TextSource):
    """A text source over an in-memory frame, to test the cleaning and splitting rules on their own."""

    def __init__(self, frame: pd.DataFrame, label_names: list[str] | None = None, oos_label: str | None = None):
        self.frame = frame
        self.label_names = label_names
        self.oos_label = oos_label
        self.loads = 0

    def load(self) -> pd.DataFrame:
        self.loads += 1
        return self.frame.copy()

    def fingerprint(self) -> str:
        return str(pd.util.hash_pandas_object(self.frame).sum())


def classes(sizes: dict[str, int]) -> pd.DataFrame:
    """Distinct texts, ``sizes[label]`` of each label."""
    labels = np.repeat(list(sizes), list(sizes.values()))
    return pd.DataFrame({"text": [f"text {i} of {label}" for i, label in enumerate(labels)], "label": labels})


def all_texts(splits) -> list[str]:
    return [*splits.train["text"], *splits.valid["text"], *splits.test["text"]]


# --- splitting ----------------------------------------------------------------------------------------
def test_stratified_split_gives_each_class_its_share():
    splits = prepare_text_data(FrameSource(classes({"a": 20, "b": 40, "c": 100, "d": 3, "e": 2})), seed=1)
    names = splits.label_names
    assert names == ["a", "b", "c", "d", "e"]
    for frame, expected in ((splits.valid, [2, 4, 10, 1, 0]), (splits.test, [2, 4, 10, 1, 0])):
        assert np.bincount(frame["label"], minlength=5).tolist() == expected
    assert np.bincount(splits.train["label"], minlength=5).tolist() == [16, 32, 80, 1, 2]
    assert len(set(all_texts(splits))) == 165  # every row in exactly one split
    assert splits.train["label"].dtype == np.int64 and splits.task == "classification"


def test_split_is_deterministic_for_a_seed_and_changes_with_it():
    source = FrameSource(classes({"a": 30, "b": 30}))
    first, again = prepare_text_data(source, seed=3), prepare_text_data(source, seed=3)
    other = prepare_text_data(source, seed=4)
    assert first.test["text"].tolist() == again.test["text"].tolist()
    assert first.fingerprint == again.fingerprint
    assert set(first.test["text"]) != set(other.test["text"]) and first.fingerprint != other.fingerprint


def test_regression_split_is_stratified_by_rounded_rating():
    frame = pd.DataFrame({"text": [f"review {i}" for i in range(100)], "label": [1.0] * 20 + [4.8] * 30 + [5.0] * 50})
    splits = prepare_text_data(FrameSource(frame), task="regression", valid_ratio=0.2, test_ratio=0.1)
    assert splits.label_names is None and splits.oos_label is None and splits.train["label"].dtype == np.float64
    assert splits.test["label"].round().value_counts().sort_index().tolist() == [2, 8]  # 1 star: 2, 5 stars: 3 + 5
    assert splits.valid["label"].round().value_counts().sort_index().tolist() == [4, 16]


def test_official_splits_are_kept_and_only_missing_ones_carved():
    frame = classes({"a": 20, "b": 20}).assign(split=["train"] * 30 + ["test"] * 10)
    splits = prepare_text_data(FrameSource(frame), valid_ratio=0.1, test_ratio=0.5)
    assert splits.test["text"].tolist() == frame["text"][30:].tolist()
    # valid comes out of train per class: a has 20 train rows, b 10.
    assert np.bincount(splits.valid["label"]).tolist() == [2, 1] and len(splits.train) == 27


# --- cleaning and deduplication -----------------------------------------------------------------------
def test_whitespace_empty_texts_and_missing_labels():
    frame = pd.DataFrame(
        {
            "text": ["  hello \n  world ", "", None, "   ", "fine", "no label", *[f"x{i}" for i in range(6)]],
            "label": ["a", "a", "a", "a", "b", None, *["a", "b"] * 3],
        }
    )
    splits = prepare_text_data(FrameSource(frame), valid_ratio=0.0, test_ratio=0.0)
    assert "hello world" in splits.train["text"].tolist()
    assert splits.counts["rows read"] == 12
    assert splits.counts["empty texts dropped"] == 3 and splits.counts["missing labels dropped"] == 1
    assert len(splits.train) == 8 and splits.valid.empty and splits.test.empty


def test_dedupe_is_case_and_space_insensitive_and_removes_leaks():
    frame = pd.DataFrame(
        {
            "text": ["Hello there", "hello  THERE", "bye", "Bye", "only train", "Bye", "x", "y", "z"],
            "label": ["a", "b", "b", "b", "b", "b", "a", "b", "a"],
            "split": ["train", "train", "train", "train", "train", "test", "valid", "valid", "test"],
        }
    )
    splits = prepare_text_data(FrameSource(frame))
    assert splits.counts["duplicate texts dropped"] == 2  # "hello  THERE" and "Bye" repeat within train
    assert splits.counts["test/valid texts removed from train"] == 1  # "bye" is a test text
    assert splits.train["text"].tolist() == ["Hello there", "only train"]  # the first occurrence is kept
    assert splits.test["text"].tolist() == ["Bye", "z"]
    kept = prepare_text_data(FrameSource(frame), dedupe=False)
    assert len(kept.train) == 5 and kept.counts.get("duplicate texts dropped") is None


def test_dedupe_happens_before_splitting_without_official_splits():
    texts = [f"query {i % 40}" for i in range(200)]  # every text five times
    frame = pd.DataFrame({"text": texts, "label": [("a", "b")[i % 40 % 2] for i in range(200)]})
    splits = prepare_text_data(FrameSource(frame), valid_ratio=0.2, test_ratio=0.2)
    assert splits.counts["duplicate texts dropped"] == 160
    assert len(all_texts(splits)) == len(set(all_texts(splits))) == 40


# --- labels -------------------------------------------------------------------------------------------
def test_label_map_keeps_given_order_and_appends_new_labels_sorted():
    splits = prepare_text_data(FrameSource(classes({"c": 10, "a": 10, "b": 10})), label_names=["b", "z"])
    assert splits.label_names == ["b", "z", "a", "c"]
    decoded = np.asarray(splits.label_names)[splits.train["label"]]
    assert all(text.endswith(label) for text, label in zip(splits.train["text"], decoded))


def test_source_label_order_and_oos_index():
    source = FrameSource(classes({"b": 10, "oos": 10, "a": 10}), label_names=["b", "a", "unused"], oos_label="oos")
    splits = prepare_text_data(source)
    assert splits.label_names == ["b", "a", "unused", "oos"] and splits.oos_label == 3


def test_numeric_labels_are_named_and_ordered_as_numbers():
    frame = pd.DataFrame({"text": [f"t{i}" for i in range(30)], "label": [2.0, 10.0, 1.0] * 10})
    assert prepare_text_data(FrameSource(frame)).label_names == ["1", "2", "10"]


# --- user errors --------------------------------------------------------------------------------------
def test_bad_task_ratios_classes_and_labels_are_user_errors():
    source = FrameSource(classes({"a": 10, "b": 10}))
    with pytest.raises(RecsysError, match=r"unknown task 'ranking'"):
        prepare_text_data(source, task="ranking")
    with pytest.raises(RecsysError, match=r"valid_ratio"):
        prepare_text_data(source, valid_ratio=0.6, test_ratio=0.5)
    with pytest.raises(RecsysError, match=r"regression needs numeric labels.*'a'"):
        prepare_text_data(source, task="regression")
    with pytest.raises(RecsysError, match=r"has one class \('a'\)"):
        prepare_text_data(FrameSource(classes({"a": 10})))
    unseen = classes({"a": 10, "b": 10}).assign(split=["train"] * 18 + ["test", "test"])
    unseen.loc[19, "label"] = "new"
    with pytest.raises(RecsysError, match=r"'new' in the test split .* never occur in train"):
        prepare_text_data(FrameSource(unseen))
    numeric = pd.DataFrame({"text": range(10), "label": ["a", "b"] * 5})
    with pytest.raises(RecsysError, match=r"holds numbers, not texts.*text_column"):
        prepare_text_data(FrameSource(numeric))


def test_missing_paths_suggest_data_path(tmp_path):
    for source in (
        Banking77Source(None),
        ClincSource(str(tmp_path / "nope.json")),
        ReviewSource(str(tmp_path / "nope")),
        TableTextSource(str(tmp_path / "nope.csv")),
        TableTextSource("data/nope.csv"),  # one slash like a hub name, but a table extension
    ):
        with pytest.raises(RecsysError, match=r"data.path="):
            source.load()
    with pytest.raises(RecsysError, match=r"no train.csv.*data.path="):
        Banking77Source(str(tmp_path)).load()
    for source in (ReviewSource(str(tmp_path)), TableTextSource(str(tmp_path))):  # a folder without data files
        with pytest.raises(RecsysError, match=r"no .*json.* files in .*data.path="):
            source.load()


def test_hub_looking_name_that_cannot_be_loaded_is_a_user_error(monkeypatch):
    import datasets
    import huggingface_hub.constants

    # Offline mode answers at once instead of retrying the network for half a minute.
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(RecsysError, match=r"cannot load Hugging Face dataset 'nobody-here/no-such-dataset'"):
        TableTextSource("nobody-here/no-such-dataset").load()


# --- sources on tiny files ----------------------------------------------------------------------------
def write_banking(folder: Path) -> None:
    folder.mkdir(exist_ok=True)
    train = classes({"card_arrival": 10, "top_up": 10, "lost_card": 10})
    train.rename(columns={"label": "category"}).to_csv(folder / "train.csv", index=False)
    test = {
        "text": ["where is my card?", "top up failed", "text 0 of card_arrival"],
        "category": ["card_arrival", "top_up", "card_arrival"],
    }
    pd.DataFrame(test).to_csv(folder / "test.csv", index=False)
    (folder / "categories.json").write_text(json.dumps(["top_up", "lost_card", "card_arrival"]))


def test_banking77_source(tmp_path):
    write_banking(tmp_path / "b77")
    source = Banking77Source(str(tmp_path / "b77" / "train.csv"))  # a file inside the folder works too
    splits = prepare_text_data(source)
    assert splits.label_names == ["top_up", "lost_card", "card_arrival"]
    assert len(splits.test) == 3 and len(splits.valid) == 3 and len(splits.train) == 26  # one test text leaked
    assert splits.counts["test/valid texts removed from train"] == 1
    (tmp_path / "b77" / "test.csv").write_text("sentence,intent\nhi,top_up\n")
    with pytest.raises(RecsysError, match=r"no column text, category .*found: sentence, intent"):
        source.load()


def clinc_data() -> dict:
    def pairs(split: str, n: int) -> list:
        return [[f"{split} {intent} {i}", intent] for intent in ("balance", "transfer") for i in range(n)]

    return {
        "train": pairs("train", 5),
        "val": pairs("val", 2),
        "test": pairs("test", 2),
        "oos_train": [["what is the moon made of", "oos"], ["sing a song", "oos"]],
        "oos_val": [["tell a joke", "oos"]],
        "oos_test": [["who won the game", "oos"]],
    }


def test_clinc_source_splits_and_out_of_scope(tmp_path):
    (tmp_path / "data_full.json").write_text(json.dumps(clinc_data()))
    (tmp_path / "other.json").write_text("{}")  # data_full.json is preferred when a folder holds several
    splits = prepare_text_data(ClincSource(str(tmp_path)))
    assert splits.label_names == ["balance", "oos", "transfer"] and splits.oos_label == 1
    assert (len(splits.train), len(splits.valid), len(splits.test)) == (12, 5, 5)
    assert (splits.test["label"] == 1).sum() == 1 and splits.test["text"].iloc[-1] == "who won the game"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "is empty"),
        ("{not json", "not valid JSON"),
        ("[1, 2]", "not CLINC150 data.*found a JSON list"),
        ('{"val": []}', "not CLINC150 data.*found val"),
        ('{"train": ["only text"]}', r"key 'train' is not a list of \[text, intent\] pairs"),
        ('{"train": [["a", "b"], 3]}', "key 'train' is not a list"),
    ],
)
def test_clinc_bad_files_are_user_errors(tmp_path, content, message):
    path = tmp_path / "data_full.json"
    path.write_text(content)
    with pytest.raises(RecsysError, match=message):
        ClincSource(str(path)).load()


def test_review_source_joins_text_fields(tmp_path):
    reviews = [
        {"overall": 5.0, "summary": "Great!", "reviewText": "Works  well."},
        {"overall": 2.0, "summary": "Meh", "reviewText": "Broke soon"},
        {"overall": 4.0, "reviewText": "No summary here"},
        {"overall": 1.0, "summary": "Only a summary", "reviewText": ""},
    ]
    folder = tmp_path / "reviews"
    folder.mkdir()
    (folder / "a.json").write_text("\n".join(json.dumps(r) for r in reviews[:2]))
    (folder / "b.jsonl").write_text("\n".join(json.dumps(r) for r in reviews[2:]))
    frame = ReviewSource(str(folder)).load()
    assert frame["text"].tolist() == ["Great! Works well.", "Meh. Broke soon", "No summary here", "Only a summary"]
    assert frame["label"].tolist() == [5.0, 2.0, 4.0, 1.0] and "split" not in frame
    with pytest.raises(RecsysError, match=r"column 'stars' \(rating_field\).*available: .*data.text.source"):
        ReviewSource(str(folder), rating_field="stars").load()
    with pytest.raises(RecsysError, match=r"text_fields=<column>"):
        ReviewSource(str(folder), text_fields=["summary", "body"]).load()
    (folder / "c.json").write_text('{"overall": 5.0, "summary"\n')
    with pytest.raises(RecsysError, match=r"cannot read .*c.json"):
        ReviewSource(str(folder)).load()


@pytest.mark.parametrize("ext", ["csv", "tsv", "jsonl", "parquet"])
def test_table_text_source_reads_every_format(tmp_path, ext):
    frame = pd.DataFrame({"utterance": ["hi there", "bye now", "hello"], "intent": ["greet", "leave", "greet"]})
    path = tmp_path / f"texts.{ext}"
    if ext in ("csv", "tsv"):
        frame.to_csv(path, index=False, sep="," if ext == "csv" else "\t")
    elif ext == "jsonl":
        frame.to_json(path, orient="records", lines=True)
    else:
        frame.to_parquet(path)
    loaded = TableTextSource(str(path), text_column="utterance", label_column="intent").load()
    assert (
        loaded["text"].tolist() == frame["utterance"].tolist() and loaded["label"].tolist() == frame["intent"].tolist()
    )


def test_table_text_source_splits_from_a_column_or_file_names(tmp_path):
    frame = classes({"a": 6, "b": 6}).assign(part=["train"] * 8 + ["validation", "dev", "test", "TEST"])
    path = tmp_path / "texts.csv"
    frame.to_csv(path, index=False)
    splits = prepare_text_data(TableTextSource(str(path), split_column="part"))
    assert (len(splits.train), len(splits.valid), len(splits.test)) == (8, 2, 2)
    frame.loc[0, "part"] = "holdout"
    frame.to_csv(path, index=False)
    with pytest.raises(RecsysError, match=r"unknown split name.*holdout.*split_column"):
        TableTextSource(str(path), split_column="part").load()

    folder = tmp_path / "folder"
    folder.mkdir()
    classes({"a": 5, "b": 5}).to_csv(folder / "train.csv", index=False)
    pd.DataFrame({"text": ["new a", "new b"], "label": ["a", "b"]}).to_csv(folder / "test.csv", index=False)
    loaded = TableTextSource(str(folder)).load()
    assert loaded["split"].tolist() == ["test", "test", *["train"] * 10]


def test_table_text_source_column_errors(tmp_path):
    path = tmp_path / "texts.csv"
    pd.DataFrame({"sentence": ["a b", "c d"], "id": [1, 2], "intent": ["x", "y"]}).to_csv(path, index=False)
    missing = r"column 'text' \(text_column\).*available: sentence, id, intent.*data.text.source.text_column=<column>"
    with pytest.raises(RecsysError, match=missing):
        TableTextSource(str(path), label_column="intent").load()
    with pytest.raises(RecsysError, match=r"column 'id' of .* holds numbers, not texts.*text_column"):
        TableTextSource(str(path), text_column="id", label_column="intent").load()
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(RecsysError, match=r"empty"):
        TableTextSource(str(empty)).load()
    header_only = tmp_path / "header.csv"
    header_only.write_text("text,label\n")
    with pytest.raises(RecsysError, match=r"has no rows"):
        prepare_text_data(TableTextSource(str(header_only)))


def test_table_text_source_with_a_local_datasets_folder(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    import huggingface_hub.constants

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    features = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "pos"])})
    folder = tmp_path / "hf"
    folder.mkdir()
    for split, n in (("train", 10), ("validation", 4), ("test", 4)):
        rows = {"text": [f"{split} review {i}" for i in range(n)], "label": [i % 2 for i in range(n)]}
        datasets.Dataset.from_dict(rows, features=features).to_parquet(folder / f"{split}.parquet")
    source = TableTextSource(str(folder), format="hf")
    splits = prepare_text_data(source)
    assert splits.label_names == ["neg", "pos"]  # the ClassLabel names, not 0/1
    assert (len(splits.train), len(splits.valid), len(splits.test)) == (10, 4, 4)
    one = prepare_text_data(TableTextSource(str(folder), format="hf", hf_split="train"), valid_ratio=0.2)
    assert (len(one.train), len(one.valid), len(one.test)) == (6, 2, 2)


def test_fingerprint_follows_file_content_and_parameters(tmp_path):
    path = tmp_path / "texts.csv"
    classes({"a": 5, "b": 5}).to_csv(path, index=False)
    source = TableTextSource(str(path))
    before = prepare_text_data(source).fingerprint
    assert prepare_text_data(source, seed=1).fingerprint != before
    assert prepare_text_data(source, dedupe=False).fingerprint != before
    # A model's own label map passed back (as eval does) names the same data; another map does not.
    names = prepare_text_data(source).label_names
    assert prepare_text_data(source, label_names=names).fingerprint == before
    assert prepare_text_data(source, label_names=["b", "a"]).fingerprint != before
    classes({"a": 5, "b": 6}).to_csv(path, index=False)
    assert source.fingerprint() != TableTextSource(str(path), label_column="text").fingerprint()
    assert prepare_text_data(source).fingerprint != before


def test_synthetic_queries_are_labelled_with_their_intents():
    params = {"n_users": 60, "n_categories": 3, "items_per_category": 8, "sessions_per_user": [2, 3]}
    source = SyntheticQueries(**params)
    frame = source.load()
    assert set(frame.columns) == {"text", "label"} and frame["label"].nunique() == 3
    splits = prepare_text_data(source)
    assert len(splits.label_names) == 3 and len(splits.test) > 0
    assert len(set(all_texts(splits))) == len(all_texts(splits))
    assert source.fingerprint() == SyntheticQueries(**params).fingerprint() != SyntheticQueries(seed=1).fingerprint()


# --- processed folder ---------------------------------------------------------------------------------
def assert_same_splits(loaded, fresh) -> None:
    """Everything a model sees: the frames exactly (dtypes, order, index), the labels and the counts."""
    for split in ("train", "valid", "test"):
        pd.testing.assert_frame_equal(getattr(loaded, split), getattr(fresh, split), check_exact=True)
        assert all(type(text) is str for text in getattr(loaded, split)["text"])
    assert (loaded.task, loaded.label_names, loaded.oos_label) == (fresh.task, fresh.label_names, fresh.oos_label)
    assert loaded.counts == fresh.counts and list(loaded.counts) == list(fresh.counts)
    assert loaded.fingerprint == fresh.fingerprint


def shop_texts() -> pd.DataFrame:
    """Classes with an out-of-scope one, repeated texts and a text leaking from test into train."""
    frame = classes({"b": 12, "oos": 6, "a": 12}).assign(split=["train"] * 26 + ["test"] * 4)
    repeats = pd.DataFrame({"text": ["TEXT 0 of b", "text 29 of a"], "label": ["b", "a"], "split": "train"})
    return pd.concat([frame, repeats], ignore_index=True)


def test_prepare_text_writes_a_folder_and_reuses_it(tmp_path):
    source = FrameSource(shop_texts(), label_names=["a", "b"], oos_label="oos")
    splits, reused = prepare_text("shop", source, tmp_path, seed=2)
    folder = text_folder(tmp_path, "shop", splits.key)
    assert not reused and source.loads == 1 and splits.path == folder
    assert sorted(p.name for p in (tmp_path / "processed" / "text").iterdir()) == [folder.name]  # no temp left
    assert sorted(p.name for p in folder.iterdir()) == ["labels.json", "meta.json", "texts.parquet"]
    assert json.loads((folder / "labels.json").read_text()) == {"label_names": ["a", "b", "oos"], "oos_label": 2}
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["key"] == splits.key and meta["fingerprint"] == splits.fingerprint and meta["name"] == "shop"
    assert meta["splits"] == {"train": len(splits.train), "valid": len(splits.valid), "test": len(splits.test)}
    assert meta["parameters"]["seed"] == 2 and meta["counts"]["test/valid texts removed from train"] == 1

    again, reused = prepare_text("shop", source, tmp_path, seed=2)
    assert reused and source.loads == 1  # the raw data is not read again
    assert_same_splits(again, splits)
    rebuilt, reused = prepare_text("shop", source, tmp_path, seed=2, force=True)
    assert not reused and source.loads == 2 and rebuilt.path == folder
    assert_same_splits(rebuilt, splits)


def test_each_parameter_and_given_label_map_has_its_own_folder(tmp_path):
    source = FrameSource(classes({"a": 20, "b": 20}))
    base, _ = prepare_text("toy", source, tmp_path)
    names = base.label_names
    variants = [
        {"seed": 1},
        {"valid_ratio": 0.2},
        {"test_ratio": 0.2},
        {"dedupe": False},
        {"label_names": ["b", "a"]},
        {"label_names": names},  # the same resulting data, but another request: the key follows the request
    ]
    paths = {base.path}
    for params in variants:
        splits, reused = prepare_text("toy", source, tmp_path, **params)
        assert not reused and splits.path not in paths, params
        paths.add(splits.path)
    assert prepare_text("toy", source, tmp_path, label_names=names)[0].fingerprint == base.fingerprint
    assert prepare_text("other", source, tmp_path)[0].path != base.path  # another dataset name
    source.frame.loc[0, "text"] = "changed"  # another content: another source fingerprint
    assert prepare_text("toy", source, tmp_path)[0].path not in paths


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_processed_folder_round_trips_prepare_text_data(tmp_path, task):
    if task == "classification":
        source = FrameSource(shop_texts(), label_names=["a", "b"], oos_label="oos")
    else:
        ratings = [1.0, 2.5, 4.0, 4.5, 5.0] * 8
        frame = pd.DataFrame({"text": [f"review {i % 36}" for i in range(40)], "label": ratings})
        source = FrameSource(frame)
    params = {"task": task, "valid_ratio": 0.2, "test_ratio": 0.1, "seed": 5}
    fresh = prepare_text_data(source, **params)
    splits, _ = prepare_text("rt", source, tmp_path, **params)
    assert_same_splits(splits, fresh)
    assert_same_splits(load_text_folder(splits.path), fresh)
    assert fresh.train["label"].dtype == (np.int64 if task == "classification" else np.float64)


def test_folder_loads_after_the_raw_files_are_gone(tmp_path):
    write_banking(tmp_path / "b77")
    source = Banking77Source(str(tmp_path / "b77"))
    fresh = prepare_text_data(source)
    splits, _ = prepare_text("banking77", source, tmp_path / "data")
    name, key = "banking77", splits.key  # what a checkpoint stores
    for path in (tmp_path / "b77").iterdir():
        path.unlink()
    (tmp_path / "b77").rmdir()
    reopened = load_text_folder(text_folder(tmp_path / "data", name, key))
    assert_same_splits(reopened, fresh)
    assert reopened.label_names == ["top_up", "lost_card", "card_arrival"] and reopened.key == key
    with pytest.raises(RecsysError, match=r"no processed text data at .*data.path="):
        load_text_folder(text_folder(tmp_path / "data", name, "0" * 32))


def test_a_failed_write_leaves_no_half_folder(tmp_path, monkeypatch):
    source = FrameSource(classes({"a": 10, "b": 10}))
    processed = tmp_path / "processed" / "text"

    def broken(*args, **kwargs):
        raise OSError("disk full")

    with monkeypatch.context() as patch:
        patch.setattr(pd.DataFrame, "to_parquet", broken)
        with pytest.raises(OSError, match="disk full"):
            prepare_text("toy", source, tmp_path)
    assert list(processed.iterdir()) == []
    splits, _ = prepare_text("toy", source, tmp_path)
    with monkeypatch.context() as patch:  # a failed rebuild keeps the complete folder it would replace
        patch.setattr(pd.DataFrame, "to_parquet", broken)
        with pytest.raises(OSError, match="disk full"):
            prepare_text("toy", source, tmp_path, force=True)
    assert list(processed.iterdir()) == [splits.path]
    again, reused = prepare_text("toy", source, tmp_path)
    assert reused and source.loads == 3  # the failed write, the build, the failed rebuild
    assert_same_splits(again, splits)


# --- real data (skipped where ../shared/data is absent) -----------------------------------------------
def test_banking77_real_data():
    folder = shared_dataset("banking77")
    source = Banking77Source(str(folder))
    raw = prepare_text_data(source, dedupe=False)
    assert len(raw.train) + len(raw.valid) == 10_003 and len(raw.test) == 3_080
    splits = prepare_text_data(source)
    categories = json.loads((folder / "categories.json").read_text())
    assert len(categories) == 77 and splits.label_names == categories
    assert len(splits.test) >= 3_070 and 950 <= len(splits.valid) <= 1_050
    assert splits.counts["rows read"] == 13_083
    assert np.bincount(splits.valid["label"], minlength=77).min() >= 1  # every intent is validated
    train = set(splits.train["text"].str.lower())
    assert not train & set(splits.test["text"].str.lower()) and not train & set(splits.valid["text"].str.lower())


def test_amazon_reviews_real_data():
    folder = shared_dataset("amazon-reviews-2018")
    splits = prepare_text_data(ReviewSource(str(folder)), task="regression")
    assert splits.counts["rows read"] == 5_269 + 3_176
    kept = len(splits.train) + len(splits.valid) + len(splits.test)
    assert kept <= 1_364 + 440 + 10  # about one row per unique review text (the summary joins a few apart)
    assert splits.counts["duplicate texts dropped"] == 8_445 - kept
    texts = [set(frame["text"].str.lower()) for frame in (splits.train, splits.valid, splits.test)]
    assert sum(map(len, texts)) == len(set.union(*texts)) == kept
    labels = pd.concat([splits.train["label"], splits.valid["label"], splits.test["label"]])
    assert labels.between(1, 5).all() and set(labels.round()) == {1, 2, 3, 4, 5}
    assert 0.08 < len(splits.test) / kept < 0.12
