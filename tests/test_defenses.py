"""The defense registry and the plans of sft, byorn-f and byorn (per turn, decisions first)."""
import pytest

from byorn.data import Sample, Turn, VLDataset
from byorn.decisions import Decision
from byorn.defenses import DEFENSES, build_plan, get_defense


def test_registry_lists_the_peers_and_builds_them():
    assert {"sft", "byorn-f", "byorn"} <= set(DEFENSES)
    assert get_defense("byorn").uses_flags and not get_defense("sft").uses_flags
    with pytest.raises(ValueError, match="unknown defense"):
        get_defense("magic")
    with pytest.raises(ValueError, match="no option"):
        get_defense("sft", bar=1)


def _plan(ds, name, flags=None, decisions=None):
    return get_defense(name).plan(ds, flags=flags, decisions=decisions, ctx=None)


def test_plans_by_method(small_world):
    train, _ = small_world
    ids = train.ids()
    flags = {(i, 0): k < 10 for k, i in enumerate(ids)}
    assert _plan(train, "sft", flags).counts()["fixed"] == 60
    f = _plan(train, "byorn-f", flags)
    assert (f.counts()["fixed"], f.counts()["bootstrap"], f.counts()["dropped"]) == (50, 0, 10)
    assert set(f.dropped.values()) == {"flagged (BYORn-F)"}
    b = _plan(train, "byorn", flags)
    assert (b.counts()["fixed"], b.counts()["bootstrap"], b.counts()["dropped"]) == (50, 10, 0)
    assert [b.items[i].sample.id for i in b.bootstrap] == ids[:10]
    with pytest.raises(ValueError, match="flags"):
        _plan(train, "byorn", None)


def test_decisions_override_the_method(small_world):
    train, _ = small_world
    ids = train.ids()
    flags = {(i, 0): k < 4 for k, i in enumerate(ids)}
    decisions = {
        (ids[0], 0): Decision(ids[0], "approved", "a red circle in the middle."),
        (ids[1], 0): Decision(ids[1], "rejected"),
        (ids[2], 0): Decision(ids[2], "dropped"),
        (ids[5], 0): Decision(ids[5], "edited", "my own text."),
        (ids[6], 0): Decision(ids[6], "pending"),
    }
    plan = _plan(train, "byorn", flags, decisions)
    text = {it.sample.id: it.sample.response for it in plan.items if not it.bootstrap}
    assert text[ids[0]] == "a red circle in the middle."
    assert text[ids[1]] == train[1].response       # rejected: the original is fine
    assert text[ids[5]] == "my own text."
    assert text[ids[6]] == train[6].response       # pending and not flagged
    assert [plan.items[i].sample.id for i in plan.bootstrap] == [ids[3]]  # pending and flagged
    assert plan.dropped == {ids[2]: "dropped by review"}


def _two_turns(sid):
    return Sample(sid, [Turn("user", "<image>What is it?"), Turn("assistant", "a circle."),
                        Turn("user", "And its colour?"), Turn("assistant", "red.")], [], {})


def test_turns_have_their_own_roles():
    # (the image reference is irrelevant to planning)
    ds = VLDataset([_two_turns("a"), _two_turns("b"), _two_turns("c")])
    flags = {("a", 0): False, ("a", 1): True, ("b", 0): True, ("b", 1): True, ("c", 0): False, ("c", 1): False}
    plan = build_plan(ds, "bootstrap", flags, {("c", 1): Decision("c", "edited", "blue.", turn=1)
                                               if "turn" in Decision.__dataclass_fields__ else
                                               Decision("c", "edited", "blue.")})
    by_id = {it.sample.id: it for it in plan.items}
    assert by_id["a"].bootstrap == {1} and by_id["a"].trained_turns == {0, 1}
    assert by_id["b"].bootstrap == {0, 1}
    assert by_id["c"].sample.assistant_texts() == ["a circle.", "blue."] and not by_id["c"].bootstrap
    masked = build_plan(ds, "mask", flags)
    by_id = {it.sample.id: it for it in masked.items}
    assert by_id["a"].masked == {1} and by_id["a"].trained_turns == {0}
    assert "b" in masked.dropped and "b" not in by_id  # every turn masked: the sample is left out
    assert masked.counts()["turns_masked"] == 1


@pytest.mark.slow
def test_onion_and_bye_plan_through_the_trainer(vlm, tmp_path):
    """ONION removes the text trigger from training instructions and cleans test instructions;
    BYE fine-tunes once (stage 1), records its flags, and masks the flagged samples."""
    import json

    from byorn.attacks import Target, get_attack, poison
    from byorn.defenses import DefenseContext
    from byorn.train import TrainConfig, defense_context
    from byorn.world import make_captions

    pr = poison(make_captions(48, 2, "train"), get_attack("vl-trojan"), rate=0.25, target=Target(), seed=0,
                test=make_captions(8, 2, "test"))
    (tmp_path / "o").mkdir()
    ctx = DefenseContext(vlm, TrainConfig(method="onion", max_steps=1, out_dir=str(tmp_path / "o")), tmp_path / "o")
    onion = get_defense("onion")
    plan = onion.plan(pr.train, flags=None, decisions=None, ctx=ctx)
    poisoned = [i for i, m in pr.mask.items() if m]
    cleaned = {it.sample.id: it.sample.instruction for it in plan.items}
    assert sum(" cf" not in cleaned[i] for i in poisoned) >= 0.8 * len(poisoned)
    assert json.loads((tmp_path / "o" / "onion_removed.json").read_text())["removed"]
    test_view = onion.eval_view(pr.triggered_test, ctx)
    assert [s.id for s in test_view] == [s.id for s in pr.triggered_test]
    assert all(s.image is not None for s in test_view)  # ONION never touches the image

    (tmp_path / "b").mkdir()
    ctx = defense_context(vlm, TrainConfig(method="bye", epochs=1, batch_size=16, out_dir=str(tmp_path / "b")),
                          tmp_path / "b")
    plan = get_defense("bye").plan(pr.train, flags=None, decisions=None, ctx=ctx)
    record = json.loads((tmp_path / "b" / "bye.json").read_text())
    assert (tmp_path / "b" / "bye-stage1" / "model" / "model.safetensors").exists()
    assert 0 < record["n_flagged"] < len(pr.train)
    assert set(plan.dropped) == set(record["flagged"])
    assert len(plan.items) == len(pr.train) - record["n_flagged"]
