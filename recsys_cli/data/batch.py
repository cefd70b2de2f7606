"""Batch keys, defined once: datamodules produce them, models and the evaluation protocol read them."""

HISTORY = "history"  # [B, L] item indices, left-padded with 0, most recent last
NEXT_ITEMS = "next_items"  # [B, L] training target at each position (0 = no target)
TARGETS = "targets"  # [B, T] held-out items to rank, padded with 0
USERS = "users"  # [B] user indices (training windows: the window's user; predict: 0 = unknown user)
TIMESTAMPS = "timestamps"  # [B, L] event times (seconds, or positions where the data has none), aligned with
#                            history; 0 where history is padding
SEEN_ROWS = "seen_rows"  # [M] batch row of each (row, item) pair the user already interacted with
SEEN_ITEMS = "seen_items"  # [M] the item of that pair

# Text batches (intent encoder): right-padded to the batch's longest text.
INPUT_IDS = "input_ids"  # [B, T] token ids
ATTENTION_MASK = "attention_mask"  # [B, T] 1 for tokens, 0 for padding
LABELS = "labels"  # [B] class index (or float target for regression)
FEATURES = "features"  # [B, H] pooled encoder outputs, computed once when the encoder is frozen
INDEX = "index"  # [B] row of each example in its split (de-duplicates DDP shards)

# What a user says (the text-aware recommenders): the query each event answers, as encoder features.
QUERIES = "queries"  # [B, L + 1, Dq] aligned with [history, next item]: column j + 1 holds the query that the
#                      item after history column j answers (zeros: no query); training windows and evaluation alike
SEGMENT_PREFIX = "segment:"  # "segment:<name>" [B] bool: rows whose targets are in a named group (e.g. new sessions)
