"""The recommender family: models that rank items for a user's history (pop, BPR, SASRec, ...).

Data: an interaction log (``data.source``) processed into ``data/processed/<name>-<fingerprint>/``
(:mod:`recsys_cli.data.preprocess`), batched by :class:`~recsys_cli.data.datamodule.SequenceDataModule`.
Evaluation: full (or sampled) ranking by :class:`~recsys_cli.evaluation.protocol.RankingEvaluator`, with
per-user metric files. Checkpoints carry the id maps, titles, training popularity and every user's known
history, so `recsys predict` needs nothing but the file.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from recsys_cli.config import build, to_container
from recsys_cli.core.family import ModelFamily, PredictRequest, PredictResult, Prepared
from recsys_cli.data.preprocess import (
    TRAIN,
    PreprocessConfig,
    Processed,
    fingerprint,
    id_tokens,
    open_processed,
    prepare,
    processed_folder,
    train_item_counts,
)
from recsys_cli.data.spec import DataSpec
from recsys_cli.errors import RecsysError, warn

USER_COLUMN = "user_id"
HISTORY_COLUMN = "history"
QUERY_COLUMN = "query"
EXPLAIN_SUPPORT = 2  # history items named per recommended item by --explain


# --- data -------------------------------------------------------------------------------------------
def preprocess_config(data_cfg: DictConfig) -> PreprocessConfig:
    split = data_cfg.split
    return PreprocessConfig(
        rating_threshold=data_cfg.preprocess.rating_threshold,
        min_user_interactions=data_cfg.preprocess.min_user_interactions,
        min_item_interactions=data_cfg.preprocess.min_item_interactions,
        split=split.kind,
        valid_ratio=split.valid_ratio,
        test_ratio=split.test_ratio,
        # Configs stored in checkpoints written before the key existed have no seed: 0, its default.
        split_seed=split.get("seed", 0),
    )


def build_source(data_cfg: DictConfig) -> Any:
    return build(data_cfg.source, f"the data source of data={data_cfg.name}", "check the data.source keys.")


def prepare_interactions(
    cfg: DictConfig, item_vocab: list[str] | None = None, force: bool = False, user_vocab: list[str] | None = None
) -> tuple[Processed, bool]:
    """The processed interaction log of ``cfg.data`` (built once, then reused) and whether it was reused."""
    return prepare(
        cfg.data.name,
        build_source(cfg.data),
        preprocess_config(cfg.data),
        cfg.paths.data_dir,
        item_vocab=item_vocab,
        force=force,
        user_vocab=user_vocab,
    )


def data_spec(processed: Processed, max_len: int) -> DataSpec:
    """Sizes, history length, training counts and the item table (item text features derive from it on demand)."""
    import torch

    if max_len < 1:
        raise RecsysError(f"data.max_len={max_len} must be at least 1 (items of history a model reads); e.g. 50.")

    from recsys_cli.data.queries import event_queries, next_queries, session_starts

    queries = event_queries(processed.interactions, processed.extra)
    starts = session_starts(processed.interactions)
    in_training = None
    if queries is not None:  # the queries of training events: the recommender learns what they lead to
        training = queries[1][processed.interactions["split"].to_numpy() == TRAIN]
        in_training = np.bincount(training, minlength=len(queries[0])).astype(bool)
        in_training[0] = False
    return DataSpec(
        n_users=processed.n_users,
        n_items=processed.n_items,
        max_len=max_len,
        items=processed.items,
        folder=processed.path,
        item_counts=torch.from_numpy(train_item_counts(processed).astype(np.int64)),
        query_texts=None if queries is None else queries[0],
        event_queries=None if queries is None else queries[1],
        next_queries=None if queries is None else next_queries(processed.interactions, processed.n_users),
        query_in_training=in_training,
        event_groups=None if starts is None else {"new_session": starts, "same_session": ~starts},
    )


def summary_rows(processed: Processed) -> list[tuple[str, str]]:
    meta = processed.meta
    counts = meta["counts"]
    rows = [("raw rows", f"{meta['raw_rows']:,}")]
    rows += [(f"dropped: {reason}", f"{dropped:,}") for reason, dropped in meta["dropped"].items()]
    rows += [
        ("users", f"{counts['users']:,}"),
        ("items", f"{counts['items']:,}"),
        ("interactions", f"{counts['interactions']:,}"),
        ("density", f"{counts['density']:.4%}"),
    ]
    rows += [(f"{split} events", f"{size:,}") for split, size in meta["splits"].items()]
    rows.append(("split", meta["config"]["split"]))
    return rows


def with_cold_start(cfg: DictConfig, processed: Processed) -> Processed:
    """The data with ``eval.cold_start_items`` of the items held out of training (unchanged for 0)."""
    from recsys_cli.evaluation.cold_start import hold_out

    share = float(cfg.eval.get("cold_start_items", 0.0) or 0.0)
    return hold_out(processed, share, int(cfg.eval.get("cold_start_seed", 0))) if share > 0 else processed


def _prepared(processed: Processed, max_len: int, reused: bool = False, same: bool | None = None) -> Prepared:
    info: dict[str, Any] = {"dropped": processed.meta.get("dropped", {})}
    if processed.cold_start is not None:
        info["cold_start"] = processed.cold_start["info"]
    return Prepared(
        name=processed.meta["name"],
        content=processed,
        spec=data_spec(processed, max_len),
        path=processed.path,
        fingerprint=processed.meta["fingerprint"],
        reused=reused,
        title=f"{processed.meta['name']}: {processed.meta['source']}",
        summary=summary_rows(processed),
        same_as_checkpoint=same,
        info=info,
    )


def check_trainable(cfg: DictConfig, sizes: dict[str, int], processed: Processed) -> None:
    """Training needs next-item targets and a validation split to early-stop on; a dataset too small for
    either is a user error (Lightning would stop on a metric that was never logged)."""
    counts = processed.meta["counts"]
    size = f"{counts['users']:,} user(s), {counts['interactions']:,} event(s) after filtering"
    if sizes["train"] == 0:
        raise RecsysError(
            f"data={cfg.data.name} is too small to train on: no user has two training events ({size}); "
            "give more events per user."
        )
    if sizes["valid"] == 0:
        held_out = (
            "leave_one_out holds out a user's second-last event only when the user has 3+ events"
            if cfg.data.split.kind == "leave_one_out"
            else "no event fell in the validation share (data.split.valid_ratio)"
        )
        raise RecsysError(
            f"data={cfg.data.name} is too small to validate on: no user has a validation event ({size}; "
            f"{held_out}); give more events per user, or a larger data.split.valid_ratio."
        )


def eval_settings(cfg: DictConfig) -> dict[str, Any]:
    """The ``eval.*`` ranking settings (checkpoints written before sampled ranking existed: full)."""
    return {
        "ranking": cfg.eval.get("ranking", "full"),
        "num_negatives": cfg.eval.get("num_negatives", 100),
        "negatives": cfg.eval.get("negatives", "uniform"),
        "negative_seed": cfg.eval.get("negative_seed", 0),
    }


class RecommenderFamily(ModelFamily):
    kind = "recommender"

    def reads(self, data_cfg: DictConfig) -> bool:
        return data_cfg.get("source") is not None

    def missing_data_message(self, cfg: DictConfig) -> str:
        return (
            f"data={cfg.data.name} has no interaction log for model={cfg.model.name}; "
            "use a text model (e.g. model=bert_intent) or an interaction dataset (e.g. data=ml100k)."
        )

    def prepare(self, cfg: DictConfig, force: bool = False) -> Prepared:
        processed, reused = prepare_interactions(cfg, force=force)
        return _prepared(with_cold_start(cfg, processed), cfg.data.max_len, reused)

    def before_fit(self, cfg: DictConfig, model: Any, datamodule: Any) -> dict[str, Any]:
        check_trainable(cfg, datamodule.sizes(), datamodule.processed)
        if not cfg.model.get("init_from"):
            return {}
        from recsys_cli.checkpoint import warm_start

        return warm_start(model, cfg.model.init_from, self.kind)

    def reopen(self, cfg: DictConfig, checkpoint: dict[str, Any]) -> Prepared:
        from recsys_cli.checkpoint import KEY

        meta = checkpoint[KEY]
        stored = meta["data"]
        max_len = checkpoint["hyper_parameters"]["max_len"]
        trained = meta["config"].get("eval", {})
        for key, default in (("cold_start_items", 0.0), ("cold_start_seed", 0)):
            if cfg.eval.get(key, default) != trained.get(key, default):
                raise RecsysError(
                    f"the checkpoint was trained with eval.{key}={trained.get(key, default)}, not "
                    f"{cfg.eval.get(key, default)}: new items must be held out while training; train with "
                    f"eval.{key}={cfg.eval.get(key, default)} and evaluate that checkpoint."
                )
        if to_container(cfg.data) == meta["config"]["data"]:
            # The training data itself, processed: no raw file is read.
            folder = processed_folder(cfg.paths.data_dir, stored["name"], stored["fingerprint"])
            processed = open_processed(folder, stored["fingerprint"])
            if processed is not None:
                return _prepared(with_cold_start(cfg, processed), max_len, reused=True, same=True)
        # Another dataset (or another version of it) is read through the checkpoint's item and user
        # vocabularies, so indices mean what the model learned: events on unknown items are dropped and
        # counted; unknown users get indices past the checkpoint's (per-user models fold them in from history).
        source, config = build_source(cfg.data), preprocess_config(cfg.data)
        source_fp = source.fingerprint()
        same = fingerprint(source_fp, config, None) == stored["fingerprint"]
        processed, reused = prepare(
            cfg.data.name,
            source,
            config,
            cfg.paths.data_dir,
            item_vocab=None if same else stored["item_ids"][1:],
            user_vocab=None if same else stored["user_ids"][1:],
            source_fingerprint=source_fp,
        )
        empty = [split for split in ("valid", "test") if not processed.meta["splits"].get(split)]
        if empty:
            warn(f"data={cfg.data.name} has no {' or '.join(empty)} events; its metrics are left out.")
        return _prepared(with_cold_start(cfg, processed), max_len, reused, same)

    def datamodule(self, cfg: DictConfig, data: Prepared, model: Any) -> Any:
        from recsys_cli.data.datamodule import SequenceDataModule

        spec = data.spec
        # A model that reads what users say gives the features of the data's queries as it reads them.
        reader = getattr(model, "query_features", None)
        table = reader(spec, cfg.eval.get("oos_queries")) if reader is not None else None
        groups = spec.event_groups
        if table is not None and spec.query_out_of_scope is not None and spec.event_queries is not None:
            # Targets whose query the intent model calls out of scope, and those it reads as one of its intents.
            outside = spec.query_out_of_scope[spec.event_queries]
            asked = spec.event_queries > 0
            groups = {**(groups or {}), "query_out_of_scope": outside & asked, "query_in_scope": ~outside & asked}
        return SequenceDataModule(
            data.content,
            max_len=spec.max_len,
            batch_size=cfg.data.batch_size,
            eval_batch_size=cfg.data.eval_batch_size,
            num_workers=cfg.data.num_workers,
            group_by_length=cfg.data.group_by_length,
            seed=cfg.seed,
            window_stride=cfg.data.window_stride,
            event_queries=spec.event_queries,
            query_table=table,
            event_groups=groups,
            history_free=bool(cfg.eval.get("query_only", False)),
        )

    def evaluator(self, cfg: DictConfig, data: Prepared, checkpoint: dict[str, Any] | None = None) -> Any:
        from recsys_cli.checkpoint import KEY
        from recsys_cli.evaluation.protocol import RankingEvaluator

        # Novelty, ARP and popularity negatives use the popularity the model was trained on.
        if checkpoint is None:
            popularity = train_item_counts(data.content)
        else:
            popularity = checkpoint[KEY]["data"]["item_popularity"]
        segments, baselines = {}, {}
        cold = data.content.cold_start
        if cold is not None:
            from recsys_cli.evaluation.cold_start import SEGMENT

            segments[SEGMENT] = cold["mask"]
            baselines = {name: (SEGMENT, scores) for name, scores in cold["baselines"].items()}
        return RankingEvaluator(
            ks=list(cfg.eval.ks),
            mask_history=cfg.eval.mask_history,
            item_popularity=popularity,
            log_keys=[cfg.train.monitor],
            segments=segments,
            segment_baselines=baselines,
            **eval_settings(cfg),
        )

    def protocol(self, cfg: DictConfig, data: Prepared) -> dict[str, Any]:
        from recsys_cli.evaluation.protocol import Protocol

        processed = data.content
        pre = processed.meta["config"]
        filters = []
        if pre.get("rating_threshold") is not None:
            filters.append(f"rating >= {pre['rating_threshold']}")
        if pre.get("min_user_interactions", 0) > 1 or pre.get("min_item_interactions", 0) > 1:
            filters.append(f"k-core users>={pre['min_user_interactions']} items>={pre['min_item_interactions']}")
        settings = eval_settings(cfg)
        sampled = settings["ranking"] == "sampled"
        protocol = Protocol(
            split=pre["split"],
            ranking=settings["ranking"],
            mask_history=cfg.eval.mask_history,
            max_len=data.spec.max_len,
            filters=", ".join(filters) or "no filters",
            num_negatives=settings["num_negatives"] if sampled else None,
            negatives=settings["negatives"] if sampled else None,
            negative_seed=settings["negative_seed"] if sampled else None,
        )
        return {
            **protocol.__dict__,
            "ks": list(cfg.eval.ks),
            "description": protocol.describe(),
            **({"warning": protocol.warning} if protocol.warning else {}),
            "dataset": processed.meta["name"],
            "fingerprint": processed.meta["fingerprint"],
            "users": processed.n_users,
            "items": processed.n_items,
            **({"cold_start": processed.cold_start["info"]} if processed.cold_start is not None else {}),
        }

    def checkpoint_data(self, cfg: DictConfig, data: Prepared, datamodule: Any) -> dict[str, Any]:
        import torch

        processed = data.content
        indptr = np.concatenate([[0], np.cumsum(np.bincount(datamodule.user_idx, minlength=processed.n_users + 1))])
        items = processed.items
        return {
            "name": processed.meta["name"],
            "fingerprint": processed.meta["fingerprint"],
            "user_ids": ["", *processed.users["user_id"].tolist()],
            "item_ids": ["", *items["item_id"].tolist()],
            "item_titles": ["", *items["title"].fillna("").tolist()],
            "item_popularity": torch.from_numpy(train_item_counts(processed).astype(np.float32)),
            "history_indptr": torch.from_numpy(indptr.astype(np.int64)),
            "history_items": torch.from_numpy(datamodule.item_idx.astype(np.int32)),
            "history_times": torch.from_numpy(datamodule.timestamps.astype(np.int64)),
            # A model that reads queries: each stored event's query and the query features, so predict gives a
            # known user's history the queries it had in training and evaluation.
            **(
                {
                    "history_queries": torch.from_numpy(datamodule.event_queries.astype(np.int32)),
                    "query_features": datamodule.query_table.float(),
                }
                if datamodule.query_table is not None
                else {}
            ),
            # An intent model that knows out-of-scope: which stored queries are training queries, and the similarity
            # above which a new query counts as like them (predict keeps such a query even when it is out of scope).
            **(
                {
                    "query_seen": torch.from_numpy(np.asarray(data.spec.query_in_training, dtype=bool)),
                    "query_floor": float(data.spec.query_floor),
                }
                if datamodule.query_table is not None and data.spec.query_like_training is not None
                else {}
            ),
            # Reviews as queries: the words that go with each user's next event (their latest review).
            **(
                {"next_queries": torch.from_numpy(data.spec.next_queries.astype(np.int32))}
                if datamodule.query_table is not None and data.spec.next_queries is not None
                else {}
            ),
        }

    def reports(
        self, folder: Path, evaluator: Any, data: Prepared, model: Any, metrics: dict[str, Any]
    ) -> dict[str, Any]:
        from recsys_cli.evaluation.reports import write_per_user

        users = data.content.users
        # The evaluated data's own user ids: on the training data they are the checkpoint's user_ids.
        user_ids = np.full(int(users["user_idx"].max()) + 1, "", dtype=object)
        user_ids[users["user_idx"].to_numpy()] = users["user_id"].astype(str).to_numpy()
        return {"per_user": write_per_user(evaluator.per_user, user_ids, Path(folder) / "per_user")}

    def baselines(self, cfg: DictConfig, data: Prepared) -> dict[str, dict[str, float]]:
        """`recsys eval --baselines`: the popularity model counted on the evaluated data's training split, under
        the same protocol and evaluator as the checkpoint, i.e. the test metrics `model=pop` would reach there."""
        from recsys_cli.core.run import evaluation_trainer
        from recsys_cli.models.pop import Pop

        pop = Pop(n_items=data.spec.n_items, max_len=data.spec.max_len)
        evaluator = self.evaluator(cfg, data)
        # One counting pass over every training window, no validation; then every test user, in one process.
        trainer = evaluation_trainer(
            cfg, [evaluator], max_epochs=1, limit_train_batches=1.0, limit_val_batches=0, enable_checkpointing=False
        )
        datamodule = self.datamodule(cfg, data, pop)
        trainer.fit(pop, datamodule=datamodule)
        trainer.test(pop, datamodule=datamodule, verbose=False)
        return {"popularity (training split)": evaluator.results["test"]}

    def predict(self, checkpoint: dict[str, Any], request: PredictRequest) -> PredictResult:
        return recommend(checkpoint, request)


# --- predict ----------------------------------------------------------------------------------------
def read_requests(path: Path, model_name: str = "the recommender") -> pd.DataFrame:
    from recsys_cli.data.sources import header_delimiter, read_table

    if not path.is_file():
        raise RecsysError(f"input file '{path}' not found; pass --input users.csv (columns user_id and/or history).")
    frame = read_table(path, text_columns=[USER_COLUMN, HISTORY_COLUMN])  # CSV ids as written, as in training
    if len(frame) == 0:
        raise RecsysError(f"'{path}' has no rows; give one row per user or history to recommend for.")
    if not {USER_COLUMN, HISTORY_COLUMN, QUERY_COLUMN} & set(frame.columns):
        delimiter = header_delimiter(frame)
        if delimiter is not None:
            shown = "tab" if delimiter == "\t" else f"'{delimiter}'"
            raise RecsysError(
                f"'{path}' has one column '{frame.columns[0]}': its fields look {shown}-separated; save it "
                "comma-separated (.csv) or tab-separated (.tsv)."
            )
        if "text" in frame.columns:
            raise RecsysError(
                f"'{path}' holds texts, but the checkpoint is a recommender (model={model_name}) that needs "
                f"'{USER_COLUMN}' or '{HISTORY_COLUMN}' rows; for intents pass a bert_intent checkpoint."
            )
        raise RecsysError(
            f"'{path}' has no '{USER_COLUMN}', '{HISTORY_COLUMN}' or '{QUERY_COLUMN}' column "
            f"(found: {', '.join(map(str, frame.columns[:10]))}); rename the column holding user ids "
            f"to '{USER_COLUMN}', item lists to '{HISTORY_COLUMN}' or the user's words to '{QUERY_COLUMN}'."
        )
    return frame


def history_tokens(column: pd.Series) -> pd.DataFrame:
    """One row per (request row, position, item token), from lists or separated strings."""
    values = column.map(lambda v: v.tolist() if isinstance(v, np.ndarray) else v)
    is_text = values.map(lambda v: isinstance(v, str))
    values = values.where(~is_text, values[is_text].astype(str).str.strip().str.split(r"[\s,]+", regex=True))
    exploded = id_tokens(values.explode()).dropna()
    frame = pd.DataFrame({"row": exploded.index.to_numpy(), "item": exploded.to_numpy(dtype=object)})
    frame["pos"] = frame.groupby("row").cumcount()
    return frame


def request_histories(requests: pd.DataFrame, data: dict[str, Any]) -> dict[str, Any]:
    """Each request row's history as CSR (``indptr``, ``items``, ``times``), its user index and counts.

    The history is the stored events of a known user, then the given items. Given items carry no time:
    they take the time of the row's last stored event (0 without one), i.e. "just now" for models that
    read event times. ``users`` is the user index of each row (0: unknown or none given), ``user_ids`` its
    user id as a token (:func:`~recsys_cli.data.preprocess.id_tokens`, None where none is given). ``queries``:
    the stored query index of each event (a checkpoint of a model that reads queries keeps them; 0: none).
    """
    from recsys_cli.data.datamodule import csr_rows

    n = len(requests)
    counts: dict[str, int] = {"rows": n}
    users = np.zeros(n, dtype=np.int64)
    user_ids = np.full(n, None, dtype=object)  # rows without a user keep None (pandas would put NaN back)
    parts = []
    if USER_COLUMN in requests.columns:
        user_tokens = id_tokens(requests[USER_COLUMN].reset_index(drop=True))
        user_idx = pd.Index(data["user_ids"]).get_indexer(user_tokens.fillna("").to_numpy(dtype=object))
        no_user = user_tokens.isna().to_numpy()
        user_idx[no_user] = -1
        user_ids[~no_user] = user_tokens[~no_user].to_numpy(dtype=object)
        known = np.flatnonzero(user_idx > 0)
        users[known] = user_idx[known]
        counts["known users"] = len(known)
        counts["unknown users"] = int((user_idx < 0).sum() - no_user.sum())
        indptr = data["history_indptr"].numpy()
        batch_row, items = csr_rows(indptr, data["history_items"].numpy().astype(np.int64), user_idx[known])
        stored_times = data.get("history_times")
        if stored_times is None:  # checkpoints written before event times were stored: positions
            per_user = indptr[user_idx[known] + 1] - indptr[user_idx[known]]
            times = np.arange(len(batch_row)) - (np.cumsum(per_user) - per_user)[batch_row] + 1
        else:
            times = csr_rows(indptr, stored_times.numpy().astype(np.int64), user_idx[known])[1]
        position = np.arange(len(batch_row))  # csr_rows keeps each user's events in time order
        stored_queries = data.get("history_queries")
        query = (
            0
            if stored_queries is None
            else csr_rows(indptr, stored_queries.numpy().astype(np.int64), user_idx[known])[1]
        )
        parts.append(
            pd.DataFrame(
                {"row": known[batch_row], "part": 0, "pos": position, "item_idx": items, "time": times, "query": query}
            )
        )
    if HISTORY_COLUMN in requests.columns:
        tokens = history_tokens(requests[HISTORY_COLUMN].reset_index(drop=True))
        item_idx = pd.Index(data["item_ids"]).get_indexer(tokens["item"].to_numpy())
        counts["unknown items dropped"] = int((item_idx <= 0).sum())
        tokens = tokens.assign(part=1, item_idx=item_idx, time=np.nan, query=0)[item_idx > 0]
        parts.append(tokens[["row", "part", "pos", "item_idx", "time", "query"]])
    columns = ["row", "part", "pos", "item_idx", "time", "query"]
    events = pd.concat([pd.DataFrame(columns=columns), *parts], ignore_index=True)
    events = events.astype({"row": np.int64, "item_idx": np.int64, "query": np.int64})
    events = events.sort_values(["row", "part", "pos"], kind="stable")
    events["time"] = events.groupby("row")["time"].ffill().fillna(0).astype(np.float64)
    lengths = np.bincount(events["row"].to_numpy(), minlength=n)
    return {
        "indptr": np.concatenate([[0], np.cumsum(lengths)]),
        "items": events["item_idx"].to_numpy().astype(np.int64),
        "times": events["time"].to_numpy().astype(np.int64),
        "queries": events["query"].to_numpy(),
        "users": users,
        "user_ids": user_ids,
        "counts": counts,
    }


def request_queries(
    model: Any, requests: pd.DataFrame, counts: dict[str, int], explain: bool, data: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The rows' own words (a ``query`` column) as the model's query features and, where the query encoder
    is an intent model, each row's predicted intent. Empty without queries or for a model that reads none.
    ``data``: the checkpoint's data (its training queries: an out-of-scope query like one of them is kept)."""
    if QUERY_COLUMN not in requests.columns:
        return {}
    text = requests[QUERY_COLUMN].fillna("").astype(str).str.strip()
    texts, given = text.tolist(), (text != "").to_numpy()
    encoder = getattr(model, "query_encoder_name", None)
    if encoder is None:
        counts["queries ignored (the model reads none)"] = int(given.sum())
        return {}
    from recsys_cli.data.content import TextEmbedder

    settings = model.hparams
    embedder = TextEmbedder(encoder, max_length=settings.get("text_max_length", 64))
    features, probs = embedder.embed(texts, with_intents=True)
    # An intent model that knows when a text is none of its intents: such a query is dropped, and the row is
    # ranked by its history alone (or by popularity, without one).
    outside = embedder.out_of_scope(features)
    counts["rows with a query"] = int(given.sum())
    if outside is not None and settings.get("oos_queries", "history") == "keep":
        counts["queries out of scope (read as given: model.oos_queries=keep)"] = int((outside & given).sum())
        outside = None
    if outside is not None and data is not None and "query_seen" in data:
        like = like_stored_training(features, data)
        counts["queries out of scope, like training queries (read as given)"] = int((outside & given & like).sum())
        outside = outside & ~like
    if probs is not None:
        features = np.concatenate([features, probs], axis=1)
    if outside is not None:
        counts["queries out of scope (history alone)"] = int((outside & given).sum())
    out: dict[str, Any] = {"features": features, "given": given if outside is None else given & ~outside}
    if outside is not None:
        out["outside"] = outside
    if explain and probs is not None:
        names = np.asarray(embedder.label_names, dtype=object)
        best = probs.argmax(1)
        out["intent"] = np.where(given, names[best], None)
        out["intent_probability"] = np.where(given, probs[np.arange(len(best)), best], np.nan)
        if outside is not None:
            out["intent"] = np.where(outside, "out of scope", out["intent"])
    return out


def like_stored_training(embeddings: np.ndarray, data: dict[str, Any]) -> np.ndarray:
    """Which texts (pooled embeddings ``[N, D]``, without intent probabilities) lie as near the checkpoint's
    training queries as training queries lie to each other (``query_floor``,
    :func:`recsys_cli.data.content.like_training`)."""
    import torch

    from recsys_cli.evaluation.oos import near_training

    stored = data["query_features"][:, : embeddings.shape[1]]
    near, _ = near_training(torch.from_numpy(embeddings), stored[data["query_seen"].bool()], float(data["query_floor"]))
    return near.numpy()


def supporting_items(table: Any, ranked: Any, history: Any, k: int = EXPLAIN_SUPPORT) -> Any:
    """``[B, K, k]`` the history items most similar (cosine of item vectors) to each recommended item; 0: none."""
    import torch

    unit = torch.nn.functional.normalize(table.float(), dim=-1)
    similarity = torch.einsum("bkh,blh->bkl", unit[ranked], unit[history])
    similarity = similarity.masked_fill((history == 0).unsqueeze(1), -torch.inf)
    top = torch.topk(similarity, min(k, history.shape[1]), dim=-1)
    chosen = torch.gather(history.unsqueeze(1).expand(-1, ranked.shape[1], -1), 2, top.indices)
    return torch.where(torch.isfinite(top.values), chosen, torch.zeros_like(chosen))


def recommend(checkpoint: dict[str, Any], request: PredictRequest) -> PredictResult:
    """Top-K items for known users, given item histories and/or what users say, written in input order, atomically.

    Input rows carry a ``user_id`` (the dataset's own id), a ``history`` of item ids (a list in JSONL/Parquet,
    space- or comma-separated in CSV) and/or a ``query`` (free text), any of them missing. A known user's
    stored history is extended by the given items. Unknown item ids are dropped and counted. A model that
    reads queries ranks a row with only a query by the query alone; a query its intent model calls out of scope (one
    trained with an out-of-scope label) is dropped, so that row is ranked by its history alone; other rows left with
    no history get the training popularity ranking and are counted. Scoring runs in batches of users with one matrix
    product and ``torch.topk`` each; output is streamed. ``batch_size`` defaults to 128 users (activations stay in
    CPU cache). ``explain``: each row also gets its query's predicted intent (``intent``, ``intent_probability``;
    where the query encoder is an intent model) and, for each recommended item, the history items most similar to it
    by the model's item vectors (``because``).
    """
    import pyarrow as pa
    import torch

    from recsys_cli.checkpoint import KEY, build_module
    from recsys_cli.core.progress import progress_bar
    from recsys_cli.data import batch as keys
    from recsys_cli.data.datamodule import csr_rows, last_window
    from recsys_cli.evaluation.protocol import mask_scores
    from recsys_cli.predict import RecommendationWriter, list_column

    if (request.input_path is None) == (not request.all_users):
        raise RecsysError("give either --input FILE or --all-users.")
    model_name = checkpoint[KEY]["config"]["model"]["name"]
    if request.embeddings or request.text_column != "text" or request.int8:
        option = "--embeddings" if request.embeddings else "--int8" if request.int8 else "--text-column"
        raise RecsysError(
            f"{option} is for text models, but the checkpoint is a recommender (model={model_name}); "
            "pass a bert_intent / bert_rating checkpoint, or drop the option to recommend items."
        )
    batch_size = request.batch_size or 128
    data = checkpoint[KEY]["data"]
    if request.all_users:
        requests = pd.DataFrame({USER_COLUMN: data["user_ids"][1:]})
    else:
        requests = read_requests(Path(request.input_path), model_name=model_name)
    model = build_module(checkpoint)
    if request.explain and not hasattr(model, "item_table"):
        raise RecsysError(
            f"--explain names the history items most like each recommendation by the model's item vectors; "
            f"model={model_name} has none: use a sequence or factorisation model (e.g. sasrec, intent_sasrec, bpr)."
        )
    histories = request_histories(requests, data)
    indptr, items, times, counts = histories["indptr"], histories["items"], histories["times"], histories["counts"]
    queries = request_queries(model, requests, counts, request.explain, data)
    has_query = queries.get("given", np.zeros(len(requests), dtype=bool))
    no_history = np.diff(indptr) == 0
    counts["popularity fallback (no history)"] = int((no_history & ~has_query).sum())
    if queries:
        counts["ranked by the query alone (no history)"] = int((no_history & has_query).sum())
    item_ids = np.asarray(data["item_ids"], dtype=object)
    titles = np.asarray(data["item_titles"], dtype=object)
    popularity = data["item_popularity"].clone()
    popularity[0] = -torch.inf
    k = min(request.top_k, len(item_ids) - 1)
    user_column = histories["user_ids"]
    table = model.item_table().detach() if request.explain else None
    reads_queries = getattr(model, "query_encoder_name", None) is not None
    if reads_queries:
        width = model.query_size
        stored = data.get("query_features")
        query_table = stored.float() if stored is not None else torch.zeros(1, width)
        next_queries = data.get("next_queries")
        next_queries = next_queries.long() if next_queries is not None and stored is not None else None

    def rank(rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        starts, ends = indptr[rows], indptr[rows + 1]
        seen_rows, seen_items = csr_rows(indptr, items, rows)
        batch = {
            keys.HISTORY: torch.from_numpy(last_window(items, starts, ends, model.max_len)),
            keys.TIMESTAMPS: torch.from_numpy(last_window(times, starts, ends, model.max_len)),
            keys.USERS: torch.from_numpy(histories["users"][rows]),
            keys.SEEN_ROWS: torch.from_numpy(seen_rows),
            keys.SEEN_ITEMS: torch.from_numpy(seen_items),
        }
        if reads_queries:  # the stored queries of the history's events, then the row's own (the last column)
            history_queries = torch.from_numpy(last_window(histories["queries"], starts, ends, model.max_len))
            features = torch.cat([query_table[history_queries], query_table.new_zeros(len(rows), 1, width)], dim=1)
            if next_queries is not None:  # a known user's latest review goes with their next event
                features[:, -1] = query_table[next_queries[torch.from_numpy(histories["users"][rows])]]
            if queries:
                own = torch.from_numpy(queries["features"][rows])
                features[:, -1] = torch.where(torch.from_numpy(has_query[rows]).unsqueeze(1), own, features[:, -1])
                if "outside" in queries:  # a query out of scope: the history alone, not a stored query either
                    features[torch.from_numpy(queries["outside"][rows]), -1] = 0.0
            batch[keys.QUERIES] = features
        scores = mask_scores(model.score_all(batch).float(), batch, mask_history=request.exclude_seen)
        scores[torch.from_numpy((ends == starts) & ~has_query[rows])] = popularity  # nothing to go by
        top = torch.topk(scores, k, dim=1)
        because = None if table is None else supporting_items(table, top.indices, batch[keys.HISTORY])
        return top.values, top.indices, because

    # Rows are scored in batches of similar history length (models skip the padding a batch shares)
    # and written in input order, one chunk of many batches at a time.
    lengths = np.minimum(np.diff(indptr), model.max_len)
    chunk = batch_size * 16
    start = time.perf_counter()
    total_batches = -(-len(requests) // batch_size)  # chunks are whole multiples of batch_size
    with (
        RecommendationWriter(request.output) as writer,
        torch.inference_mode(),
        progress_bar(request.progress, total_batches) as advance,
    ):
        for begin in range(0, len(requests), chunk):
            rows = np.arange(begin, min(begin + chunk, len(requests)))
            order = rows[np.argsort(lengths[rows], kind="stable")]
            values = torch.empty(len(rows), k)
            indices = torch.empty(len(rows), k, dtype=torch.long)
            support = torch.zeros(len(rows), k, EXPLAIN_SUPPORT, dtype=torch.long)
            for sub in range(0, len(order), batch_size):
                part = order[sub : sub + batch_size]
                top_values, top_indices, because = rank(part)
                values[part - begin], indices[part - begin] = top_values, top_indices
                if because is not None:
                    support[part - begin, :, : because.shape[2]] = because
                advance()
            keep = torch.isfinite(values).numpy()  # fewer than k unseen items: a shorter list
            flat_items = indices.numpy()[keep]
            offsets = np.concatenate([[0], np.cumsum(keep.sum(1))])
            columns = {
                "row": pa.array(rows),
                "user_id": pa.array(user_column[rows], type=pa.string()),
                "item_ids": list_column(item_ids[flat_items].astype(str), offsets),
                "titles": list_column(titles[flat_items].astype(str), offsets),
                "scores": list_column(values.numpy()[keep].astype(np.float32), offsets),
            }
            if request.explain:
                if "intent" in queries:
                    columns["intent"] = pa.array(queries["intent"][rows], type=pa.string())
                    probability = queries["intent_probability"][rows].astype(np.float32)
                    columns["intent_probability"] = pa.array(probability, mask=np.isnan(probability))
                supported = item_ids[support.numpy()[keep]].astype(str)  # [kept, EXPLAIN_SUPPORT], "" where none
                joined = supported[:, 0]
                for column in range(1, EXPLAIN_SUPPORT):
                    joined = np.char.strip(np.char.add(np.char.add(joined, " "), supported[:, column]))
                columns["because"] = list_column(joined, offsets)
            writer.write(pa.table(columns))
    seconds = time.perf_counter() - start
    if request.explain:
        counts["explained rows (because: history items nearest by item-vector cosine)"] = len(requests)
    return PredictResult(output=request.output, rows=len(requests), counts=counts, seconds=seconds)
