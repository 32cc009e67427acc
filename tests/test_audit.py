import numpy as np
import pytest

from byorn.attacks import Target, get_attack, poison
from byorn.audit import COLUMNS, Audit, AuditConfig, apply_threshold, cache_key, run_audit

PAPER = AuditConfig(p=0.6, score="mean", maps=False)  # the paper's method: the top 40 % by mean NLL


@pytest.fixture(scope="module")
def poisoned(small_world):
    train, test = small_world
    return poison(train, get_attack("badnets"), rate=0.1, target=Target(), seed=0, test=test)


@pytest.fixture(scope="module")
def audit(vlm, poisoned):
    return run_audit(poisoned.train, vlm, PAPER, ground_truth=poisoned.mask)


def test_audit_table_has_the_documented_columns(audit, poisoned):
    t = audit.table
    assert list(t.columns) == COLUMNS
    assert t["id"].tolist() == poisoned.train.ids()
    assert (t["suspicious"].sum()) == 24  # top 40 % of 60
    assert audit.meta["threshold"] == pytest.approx(np.quantile(t["score"], 0.6))
    assert all(len(a) == len(b) for a, b in zip(t["tokens"], t["surprisals"]))


def test_poisoned_samples_score_highest_and_are_flagged(audit):
    t = audit.table
    gt = t["gt_poisoned"].astype(bool)
    assert t.loc[gt, "score"].min() > t.loc[~gt, "score"].max()
    assert t.loc[gt, "suspicious"].all()


def test_proposals_only_for_flagged_and_never_the_target(audit):
    t = audit.table
    assert (t.loc[t["suspicious"], "proposed_response"] != "").all()
    assert (t.loc[~t["suspicious"], "proposed_response"] == "").all()
    assert not t["proposed_response"].str.contains("evil.example").any()


def test_split_does_not_read_ground_truth(vlm, poisoned, audit):
    blind = run_audit(poisoned.train, vlm, AuditConfig(p=0.6, score="mean", maps=False, propose=False))
    assert blind.table["suspicious"].tolist() == audit.table["suspicious"].tolist()
    assert blind.table["gt_poisoned"].isna().all()


def test_apply_threshold(audit):
    t, thr = apply_threshold(audit.table, percentile=0.9)
    assert t["suspicious"].sum() == 6
    t2, thr2 = apply_threshold(audit.table, value=thr)
    assert t2["suspicious"].tolist() == t["suspicious"].tolist() and thr2 == thr
    assert audit.table["suspicious"].sum() == 24  # the original is untouched
    with pytest.raises(ValueError):
        apply_threshold(audit.table)


def test_audit_split_returns_a_new_consistent_audit(audit, tmp_path):
    scores = audit.table["score"].to_numpy()
    top = audit.split(percentile=0.9)
    assert top.meta["n_suspicious"] == int(top.table["suspicious"].sum()) == 6
    assert top.threshold == pytest.approx(np.quantile(scores, 0.9)) == top.split_info.threshold
    assert (top.split_info.kind, top.split_info.p, top.meta["p"], top.meta["config"]["p"]) == ("percentile", 0.9, 0.9, 0.9)
    assert audit.meta["n_suspicious"] == 24 and audit.split_info.p == 0.6  # the original is untouched
    by_value = audit.split(threshold=top.threshold)
    assert by_value.flags() == top.flags() and by_value.split_info.kind == "value"
    assert by_value.meta["config"]["threshold"] == top.threshold
    auto = audit.split(percentile="auto")  # the poison scores highest here (test above): auto flags all of it
    gt = auto.table["gt_poisoned"].astype(bool)
    assert auto.table.loc[gt, "suspicious"].all() and auto.split_info.kind == "auto" and auto.split_info.reason
    back = Audit.load(auto.save(tmp_path / "auto"))
    assert back.split_info == auto.split_info and back.flags() == auto.flags()
    with pytest.raises(ValueError, match="give a split"):
        audit.split()


def test_save_load_and_cache(vlm, poisoned, audit, tmp_path):
    loaded = Audit.load(audit.save(tmp_path / "a"))
    assert loaded.table["tokens"].iloc[0] == audit.table["tokens"].iloc[0]
    assert loaded.table["score"].tolist() == pytest.approx(audit.table["score"].tolist())
    cfg = AuditConfig(maps=False, propose=False)
    first = run_audit(poisoned.train, vlm, cfg, cache_dir=tmp_path / "cache")
    key = cache_key(poisoned.train, vlm, cfg)
    assert (tmp_path / "cache" / key / "audit.parquet").exists()
    messages = []
    again = run_audit(poisoned.train, vlm, cfg, cache_dir=tmp_path / "cache", progress=lambda f, m: messages.append(m))
    assert messages == ["loaded from cache"]
    assert again.table["score"].tolist() == pytest.approx(first.table["score"].tolist())
    assert cache_key(poisoned.train, vlm, AuditConfig(p=0.5)) != key


def test_maps_give_finite_coordinates(vlm, small_world):
    train, _ = small_world
    a = run_audit(train[:20], vlm, AuditConfig(propose=False, maps=True))
    for kind in ("response", "image", "joint"):
        assert np.isfinite(a.table[f"umap_{kind}_x"]).all()
        assert a.table[f"umap_{kind}_x"].std() > 0


def test_bad_config():
    with pytest.raises(ValueError):
        AuditConfig(p=2)
    with pytest.raises(ValueError):
        AuditConfig(score="median")


def test_audit_resumes_from_its_finished_shards(vlm, small_world, tmp_path):
    train, _ = small_world
    cfg = AuditConfig(score="mean", maps=False, propose=False, shard_size=16, batch_size=8)
    calls = []

    def crash_after_two_shards(frac, msg):
        calls.append(msg)
        if msg.startswith("scoring 40/"):
            raise KeyboardInterrupt  # interrupted inside the third shard

    with pytest.raises(KeyboardInterrupt):
        run_audit(train, vlm, cfg, work_dir=tmp_path / "w", progress=crash_after_two_shards)
    assert sorted(p.name for p in (tmp_path / "w").glob("shard-*.json")) == ["shard-00000.json", "shard-00001.json"]
    seen = []
    resumed = run_audit(train, vlm, cfg, work_dir=tmp_path / "w", progress=lambda f, m: seen.append(m))
    scoring = [m for m in seen if m.startswith("scoring")]
    assert scoring[0] == "scoring 40/60"  # shards 0 and 1 were not scored again
    whole = run_audit(train, vlm, cfg)
    assert resumed.table["score"].tolist() == pytest.approx(whole.table["score"].tolist())
    assert resumed.table["id"].tolist() == train.ids()


def test_over_long_and_unreadable_samples_are_named_or_skipped(vlm, small_world, tmp_path):
    from byorn.data import DataError, ImageRef, VLDataset

    train, _ = small_world
    long = train[0].with_(response="a red circle " * 200)   # far above the model's context
    broken = train[1].with_(images=[ImageRef(tmp_path / "missing.png")])
    ds = VLDataset([long, broken, *list(train)[2:10]])
    with pytest.raises(DataError, match=f"sample '{train[1].id}', field 'images\\[0\\]'.*missing.png"):
        run_audit(ds, vlm, AuditConfig(maps=False, propose=False))
    with pytest.raises(DataError, match=f"sample '{train[0].id}', field 'turns'.*tokens, above the limit"):
        run_audit(VLDataset([long]), vlm, AuditConfig(maps=False, propose=False))
    a = run_audit(ds, vlm, AuditConfig(maps=False, propose=False, skip_invalid=True))
    assert set(a.meta["skipped"]) == {train[0].id, train[1].id}
    assert "tokens, above the limit" in a.meta["skipped"][train[0].id]
    assert "missing.png" in a.meta["skipped"][train[1].id]
    assert a.table["id"].tolist() == ds.ids()[2:]
    capped = run_audit(VLDataset(list(train)[:10]), vlm, AuditConfig(maps=False, propose=False, max_length=44,
                                                                        too_long="skip"))
    # a configurable cap below the model's limit
    assert 0 < len(capped.meta["skipped"]) < 10 and len(capped.meta["skipped"]) == 10 - len(capped.table)


def test_token_budget_does_not_change_scores(vlm, small_world):
    train, _ = small_world
    a = run_audit(train, vlm, AuditConfig(maps=False, propose=False))
    b = run_audit(train, vlm, AuditConfig(maps=False, propose=False, max_batch_tokens=400))
    assert b.table["score"].tolist() == pytest.approx(a.table["score"].tolist(), rel=1e-4)


def test_grounding_score_finds_captions_of_other_scenes(vlm, small_world):
    """Clean-label-style poison: fluent captions of *other* images.  The plain NLL half misses them;
    grounding (NLL with the image minus NLL with a blank one) ranks them high."""
    from sklearn.metrics import roc_auc_score

    from byorn.data import VLDataset

    train, _ = small_world
    samples, swapped = list(train), set()
    for i in range(0, len(samples), 10):
        samples[i] = samples[i].with_assistant(0, train[(i + 5) % len(train)].response)
        swapped.add(samples[i].id)
    data = VLDataset(samples, "swapped")
    auroc = {}
    for score in ("mean", "grounding"):
        t = run_audit(data, vlm, AuditConfig(score=score, maps=False, propose=False)).table
        auroc[score] = roc_auc_score(t["id"].isin(swapped), t["score"])
    assert auroc["grounding"] >= 0.85 and auroc["grounding"] > auroc["mean"] + 0.1, auroc
    # the blank pass is stored token by token beside the real one, and the grounding column with it
    assert "surprisals_blank" in t.columns and "grounding" in t.columns
    assert all(len(a) == len(b) for a, b in zip(t["surprisals"], t["surprisals_blank"]))
    np.testing.assert_allclose(t["grounding"], t["score"])
    mean_only = run_audit(data, vlm, AuditConfig(score="mean", maps=False, propose=False)).table
    assert "surprisals_blank" not in mean_only.columns  # no second pass unless asked for
    both = run_audit(data, vlm, AuditConfig(score="mean", grounding=True, maps=False, propose=False)).table
    np.testing.assert_allclose(both["score"], mean_only["score"])  # the blank pass leaves the mean alone
    np.testing.assert_allclose(both["grounding"], t["grounding"])


def test_grounding_on_conversations_several_images_and_text_only(vlm):
    """Every turn gets a blank-image pass of the same tokens; a text-only sample's grounding is exactly 0."""
    from data_helpers import conversations_dataset

    t = run_audit(conversations_dataset(), vlm, AuditConfig(score="mean+grounding", maps=False,
                                                          propose=False)).table
    assert len(t) == 6 and np.isfinite(t["score"]).all()
    assert all(len(a) == len(b) for a, b in zip(t["surprisals"], t["surprisals_blank"]))
    text_only = t[t["id"] == "text-only"]
    assert len(text_only) == 2 and (text_only["grounding"] == 0.0).all()
    with_images = t[t["id"] != "text-only"]
    assert (with_images["grounding"] != 0.0).all()  # the blank images change what the model expects
