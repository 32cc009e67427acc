"""The split a person sets in the app is the split a run trains by and records, and the CLI reproduces it.

Runs from the Train tab's handler with the library trainer (one optimizer step of BYORn-F, which drops the
flagged turns, so the plan shows which turns the run flagged), on a small poisoned slice of the world.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from byorn.attacks import Target, get_attack, poison
from byorn.audit import Audit, AuditConfig, run_audit
from byorn.data import VLDataset
from byorn.data.io import save_llava_json

from app import tab_overview, tab_train  # noqa: E402
from app.context import Workspace, make_context, new_view  # noqa: E402
from app.jobs import FINISHED  # noqa: E402

FORM = ["BYORn-F (drop flagged)", 1, 8, 1e-3, False, 0.99, 0.7, 0, 1, 0, 0]  # one step, no evaluation


@pytest.fixture(scope="module")
def opened(vlm, small_world, tmp_path_factory):
    """A 30-sample poisoned set on disk, its mean-score audit, and a workspace of it."""
    train, _ = small_world
    pr = poison(VLDataset(list(train)[:30], "split-test"), get_attack("badnets"), rate=0.2, target=Target(), seed=0)
    folder = tmp_path_factory.mktemp("split")
    data_file = save_llava_json(pr.train, folder / "data")
    audit = run_audit(pr.train, vlm, AuditConfig(p=0.6, score="mean", maps=False, propose=False))
    ws = Workspace(key="split-test", name="split test", dataset=pr.train, table=audit.table,
                   meta=dict(audit.meta), audit=audit)
    return ws, audit, data_file, folder


def run_from_app(ws, tmp_path, mode: str, percentile: float, value: float | None) -> tuple[dict, dict]:
    ctx = make_context(ws, data_dir=tmp_path / "data")
    view = new_view(ws)
    view = tab_overview.set_threshold(ctx, view, mode, percentile, value, "joint", "score")[0]
    tab_train.start_training(ctx, view, *FORM, False)
    assert tab_train.wait_until_idle(ctx, 300)
    snap = ctx.job.snapshot()
    assert snap["status"] == FINISHED, snap
    out = Path(snap["out_dir"])
    return json.loads((out / "config.json").read_text()), json.loads((out / "metrics.json").read_text())


def cli_audit(data_file: Path, out: Path, *flags: str) -> Audit:
    from byorn.cli import main

    assert main(["audit", "--data", str(data_file), "--out", str(out), "--score", "mean", "--no-maps",
                 "--no-propose", *flags]) == 0
    return Audit.load(out)


def test_a_run_started_from_the_app_records_its_split_and_the_cli_flags_the_same_turns(opened, tmp_path):
    ws, audit, data_file, folder = opened
    scores = audit.table["score"].to_numpy()

    config, metrics = run_from_app(ws, tmp_path / "p", "percentile", 0.8, None)
    split = config["split"]
    assert (split["kind"], split["p"], config["train_config"]["p"]) == ("percentile", 0.8, 0.8)
    assert split["threshold"] == pytest.approx(np.quantile(scores, 0.8))
    assert split["n_flagged"] == int((scores > np.quantile(scores, 0.8)).sum()) == 6
    assert metrics["split"] == split
    assert config["plan"]["dropped"] == split["n_flagged"]  # the run trained by exactly those flags
    # the recorded split, given back to the CLI, flags the same turns
    again = cli_audit(data_file, folder / "cli-p", "--p", str(split["p"]))
    assert again.split_info.threshold == pytest.approx(split["threshold"])
    assert again.flags() == audit.split(percentile=0.8).flags()
    assert sum(again.flags().values()) == split["n_flagged"]

    value = float(np.sort(scores)[-4] - 1e-6)  # flags the top 4 turns
    config, metrics = run_from_app(ws, tmp_path / "v", "value", 0.3, value)
    split = config["split"]
    assert (split["kind"], split["value"], split["threshold"], split["n_flagged"]) == ("value", value, value, 4)
    assert config["train_config"]["threshold"] == value and metrics["split"] == split
    assert config["plan"]["dropped"] == 4
    again = cli_audit(data_file, folder / "cli-v", "--threshold", repr(split["value"]))
    assert again.flags() == audit.split(threshold=value).flags() and sum(again.flags().values()) == 4


def test_the_adaptive_split_from_the_app_is_recorded_with_what_it_saw(opened, tmp_path):
    ws, audit, _, _ = opened
    config, metrics = run_from_app(ws, tmp_path, "auto", 0.6, None)
    split = config["split"]
    assert split["kind"] == "auto" and config["train_config"]["p"] == "auto"
    assert split["threshold"] == pytest.approx(ws.auto_split().threshold) and split["reason"]
    assert split["n_flagged"] == config["plan"]["dropped"] == audit.split(percentile="auto").meta["n_suspicious"]


def test_the_overview_shows_the_adaptive_threshold_beside_the_papers_and_says_why():
    from app import plots, views
    from app.index import TableIndex
    from app.state import View
    from byorn.split import Split

    rng = np.random.default_rng(0)
    scores = np.r_[rng.normal(2.0, 0.5, 180), rng.normal(8.0, 0.3, 20)]
    import pandas as pd

    table = pd.DataFrame({"id": [f"s{i}" for i in range(200)], "turn": 0, "n_turns": 1, "score": scores,
                          "suspicious": False, "key": [f"s{i}" for i in range(200)]})
    _, auto = Split("auto").apply(scores)
    paper = float(np.quantile(scores, 0.6))
    assert auto.fit["case"] == "gap" and auto.n_flagged == 20
    text = views.split_text(Split("auto"), scores, auto, paper)
    assert text.startswith("**Split: adaptive (auto)**") and "a gap at" in text and "flags 80 of 200" in text
    text = views.split_text(View(split="percentile", percentile=0.8).split_spec(), scores, auto, paper)
    assert "**Split: p = 0.8**" in text and "40 of 200 flagged" in text and "would put the threshold at" in text
    assert View(split="value", threshold=3.0, percentile=None).split_spec() == Split("value", value=3.0)
    fig = plots.histogram_figure(TableIndex(table), auto.threshold,
                                 marks={"auto": auto.threshold, "paper (p = 0.6)": paper}, score="mean")
    lines = [s["x0"] for s in fig["layout"]["shapes"]]
    assert lines == [auto.threshold, paper]  # the one in use, and the paper's beside it (auto is the same line)
    assert any("paper (p = 0.6)" in a["text"] and ": 80" in a["text"] for a in fig["layout"]["annotations"])
    flagged = views.with_threshold(table, auto.threshold)
    assert int(flagged["suspicious"].sum()) == 20 and not table["suspicious"].any()


def test_a_fixed_clean_label_target_is_flagged_whole_and_the_inspector_says_why(vlm):
    """A real audit of 200 world samples, 10 % poisoned with one fluent caption of another scene: the default
    flags every poisoned turn as a shared response the images argue against, and few clean turns (not the
    40 % floor, nor a fence over the others), and the Inspector says so on a poisoned turn and not on a clean
    one."""
    from app.showing import header_markdown
    from byorn.bench import poisoned_cell

    _, built, pr = poisoned_cell(vlm, "clean-label", 0.1, 0, 200, 20)
    # three of the poisoned turns say the target with one word changed: variants of it
    text = built.target.text
    variant = text.replace(" small ", " large ", 1) if " small " in text else text.replace(" large ", " small ", 1)
    changed = [s.id for s in pr.train if pr.mask[s.id]][:3]
    data = VLDataset([s.with_(response=variant) if s.id in changed else s for s in pr.train])
    audit = run_audit(data, vlm, AuditConfig(propose=False, maps=False))  # the default score and split
    split = audit.meta["split"]
    truth = np.array([pr.mask[i] for i in audit.table["id"]])
    flags = audit.table["suspicious"].to_numpy(bool)
    assert split["fit"]["case"] == "shared response" and built.target.text[:30] in split["reason"]
    assert flags[truth].all() and flags[~truth].mean() < 0.05
    (group,) = split["fit"]["shared"]  # the target is another scene's clean caption: a clean turn may share it
    assert truth.sum() - 3 <= group["n"] <= truth.sum() - 1 and group["n_variants"] >= 3
    ws = Workspace(key="shared", name="shared", dataset=data, table=audit.table, meta=dict(audit.meta),
                   audit=audit)
    view = new_view(ws)
    ids = audit.table["id"].tolist()
    poisoned = next(i for i in np.flatnonzero(truth) if ids[i] not in changed)
    clean, varied = int(np.flatnonzero(~truth)[0]), ids.index(changed[0])
    assert f"one of **{group['n']}** turns given this response" in header_markdown(ws, view, int(poisoned))
    assert "a few words from a response given word for word" in header_markdown(ws, view, varied)
    assert "given this response" not in header_markdown(ws, view, clean)


def test_a_planted_word_is_flagged_by_its_gap_and_the_inspector_says_why(vlm):
    """A real audit of 200 world samples, 10 % poisoned by a word substituted into the correct caption
    ("circle" -> "banana"): the mean and the total show no gap, the responses' most implausible word does;
    the default flags exactly the poisoned turns (not the 40 % floor), and the Inspector names the word."""
    from app.showing import header_markdown
    from byorn.bench import poisoned_cell

    _, built, pr = poisoned_cell(vlm, "substitution", 0.1, 0, 200, 20)
    audit = run_audit(pr.train, vlm, AuditConfig(propose=False, maps=False))
    split = audit.meta["split"]
    truth = np.array([pr.mask[i] for i in audit.table["id"]])
    flags = audit.table["suspicious"].to_numpy(bool)
    assert split["fit"]["case"] == "word gap" and split["fit"]["words"][0]["word"] == "banana"
    assert flags.tolist() == truth.tolist()
    ws = Workspace(key="planted", name="planted", dataset=pr.train, table=audit.table, meta=dict(audit.meta),
                   audit=audit)
    view = new_view(ws)
    poisoned, clean = int(np.flatnonzero(truth)[0]), int(np.flatnonzero(~truth)[0])
    assert '"banana"' in header_markdown(ws, view, poisoned) and "planted" in header_markdown(ws, view, poisoned)
    assert "most implausible word" not in header_markdown(ws, view, clean)


def test_a_clean_label_target_beside_a_patch_attack_is_flagged_too(vlm):
    """A real audit of 200 world samples poisoned twice: a fixed clean-label target (10 %) and BadNets (10 %).
    The patch attack's gap flags its poison; the shared target among the other turns is flagged too (it was
    left unflagged: the gap alone), and the Inspector says why on its turns."""
    from app.showing import header_markdown
    from byorn.attacks import get_scenario
    from byorn.bench import poisoned_cell

    _, _, first = poisoned_cell(vlm, "clean-label", 0.1, 0, 200, 20)
    built = get_scenario("badnets").build(vlm, list(first.train), 1)
    second = poison(first.train, built.attack, rate=0.1, target=built.target, seed=1)
    audit = run_audit(second.train, vlm, AuditConfig(propose=False, maps=False))
    split = audit.meta["split"]
    patch = np.array([bool(second.mask[i]) for i in audit.table["id"]])
    target = np.array([bool(first.mask[i]) for i in audit.table["id"]]) & ~patch
    flags = audit.table["suspicious"].to_numpy(bool)
    assert split["fit"]["case"] == "gap" and "a second attack" in split["reason"]
    assert flags[patch].all() and flags[target].all()
    assert flags[~(patch | target)].mean() < 0.05  # the target's scene and captions two words from it
    ws = Workspace(key="mixed", name="mixed", dataset=second.train, table=audit.table, meta=dict(audit.meta),
                   audit=audit)
    assert "given this response" in header_markdown(ws, new_view(ws), int(np.flatnonzero(target)[0]))
