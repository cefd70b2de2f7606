"""Models on data with planted signal: SASRec must clearly beat popularity on the synthetic shop."""

from recsys_cli.config import compose_config
from recsys_cli.tasks import train


def test_sasrec_beats_popularity_on_the_synthetic_shop(workdir):
    common = [
        *workdir,
        "data.source.n_users=600",
        "logger=none",
        "trainer.enable_progress_bar=false",
        "data.max_len=20",
    ]
    pop = train.run(compose_config([*common, "model=pop"]))
    sasrec = train.run(compose_config([*common, "model=sasrec", "trainer.max_epochs=15", "model.dropout=0.1"]))
    pop_ndcg = pop.metrics["test"]["test/ndcg@10"]
    sasrec_ndcg = sasrec.metrics["test"]["test/ndcg@10"]
    assert sasrec_ndcg > 2 * pop_ndcg, (sasrec_ndcg, pop_ndcg)
