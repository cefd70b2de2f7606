import pandas as pd

from recsys_cli.data.features import item_feature_tokens


def test_item_feature_tokens_share_words_across_items_and_pad():
    items = pd.DataFrame(
        {"item_idx": [1, 2, 3], "title": ["Red Shoe", "Blue shoe", None], "category": ["shoes", "shoes", ""]}
    )
    tokens = item_feature_tokens(items, n_items=4, max_tokens=3)
    assert tokens.shape == (5, 3)
    assert (tokens[0] == 0).all() and (tokens[3] == 0).all() and (tokens[4] == 0).all()  # padding, no text, absent
    red, blue = set(tokens[1]) - {0}, set(tokens[2]) - {0}
    assert len(red) == 3 and len(blue) == 3 and len(red & blue) == 2  # "shoe" and "shoes" are shared
