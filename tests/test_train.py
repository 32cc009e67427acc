import json
import math
import threading

import pytest
import torch

from byorn.attacks import Target, get_attack, poison
from byorn.audit import AuditConfig, run_audit
from byorn.decisions import Decision
from byorn.models import VLM
from byorn.train import Callback, TrainConfig, ema_decay_at, ema_update, list_runs, train


def _param_delta(a, b) -> float:
    return sum((p - q).abs().sum().item() for p, q in zip(a.parameters(), b.parameters()))


def test_ema_update_known_answer():
    a, b = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)
    with torch.no_grad():
        a.weight.fill_(1.0), b.weight.fill_(3.0)
    ema_update(a, b, 0.75)
    assert torch.allclose(a.weight, torch.full_like(a.weight, 1.5))
    assert ema_decay_at(0, 0.99) == pytest.approx(0.1)
    assert ema_decay_at(10_000, 0.99) == 0.99


class Recorder(Callback):
    def __init__(self, stop_at=None, cancel=None):
        self.steps, self.evals, self.begun, self.ended = [], [], False, False
        self.stop_at, self.cancel = stop_at, cancel

    def on_train_begin(self, st):
        self.begun = True

    def on_step_end(self, st):
        self.steps.append(st.step)
        if self.stop_at and st.step >= self.stop_at:
            self.cancel.set()

    def on_evaluate(self, st, m):
        self.evals.append(m)

    def on_train_end(self, st):
        self.ended = True


@pytest.mark.slow
def test_end_to_end_world_poison_audit_byorn_eval(vlm, tmp_path):
    """world -> poison -> audit -> train byorn -> eval on a small slice."""
    from byorn.world import make_captions

    train_ds, test_ds = make_captions(96, 5, "train"), make_captions(24, 5, "test")
    pr = poison(train_ds, get_attack("vl-trojan"), rate=0.1, target=Target(), seed=0, test=test_ds)
    audit = run_audit(pr.train, vlm, AuditConfig(maps=False, propose=False))
    rec = Recorder()
    cfg = TrainConfig(method="byorn", epochs=2, batch_size=16, out_dir=str(tmp_path / "run"), eval_every=4)
    res = train(pr.train, cfg, vlm=vlm, audit=audit, eval_clean=test_ds, eval_triggered=pr.triggered_test,
                target=Target(), callbacks=[rec])
    # the model changed, the reference did not
    tuned = VLM.load(res.out_dir / "model")
    assert _param_delta(tuned.model, vlm.model) > 1.0
    assert vlm.identity == VLM.load().identity
    # metrics were computed, periodically and at the end
    m = res.metrics
    for key in ("cider", "bleu", "exact_match", "asr", "wall_s"):
        assert key in m
    assert 0.0 <= m["asr"] <= 1.0 and m["cider"] >= 0.0
    n_flagged = int(audit.table["suspicious"].sum())
    assert m["plan"] == {"fixed": 96 - n_flagged, "bootstrap": n_flagged, "dropped": 0}
    total = 2 * (math.ceil((96 - n_flagged) / 16) + math.ceil(n_flagged / 16))
    assert rec.begun and rec.ended and rec.steps == list(range(1, total + 1))
    assert [e["step"] for e in rec.evals] == [*range(4, total, 4), total]  # periodic + final
    # the loss went down over training
    hist = json.loads((res.out_dir / "metrics.json").read_text())["history"]["loss"]
    assert sum(h["loss"] for h in hist[-3:]) < sum(h["loss"] for h in hist[:3])
    # bootstrapped responses came from the model, never the poisoned text
    reps = [json.loads(x) for x in (res.out_dir / "replacements.jsonl").read_text().splitlines()]
    assert len(reps) == 2 * n_flagged
    assert not any("evil.example" in r["response"] for r in reps)
    cfg_json = json.loads((res.out_dir / "config.json").read_text())
    assert cfg_json["seed"] == 0 and cfg_json["dataset_fingerprint"] == pr.train.fingerprint()
    # a run folder is never overwritten
    with pytest.raises(FileExistsError):
        train(pr.train, cfg, vlm=vlm, audit=audit)
    runs = list_runs(tmp_path)
    assert runs["method"].tolist() == ["byorn"] and runs["asr"].iloc[0] == m["asr"]


def test_cancel_stops_after_the_current_step_and_keeps_the_model(vlm, small_world, tmp_path):
    train_ds, _ = small_world
    cancel = threading.Event()
    rec = Recorder(stop_at=2, cancel=cancel)
    res = train(train_ds, TrainConfig(method="sft", epochs=5, batch_size=8, out_dir=str(tmp_path / "c")),
                vlm=vlm, callbacks=[rec], cancel=cancel)
    assert res.cancelled and rec.steps == [1, 2]
    assert (res.out_dir / "model" / "model.safetensors").exists()
    assert _param_delta(VLM.load(res.out_dir / "model").model, vlm.model) > 0  # two steps were kept
    assert json.loads((res.out_dir / "metrics.json").read_text())["cancelled"] is True


def test_decisions_are_honoured_and_dropped_samples_left_out(vlm, small_world, tmp_path):
    train_ds, _ = small_world
    ids = train_ds.ids()
    decisions = {(ids[0], 0): Decision(ids[0], "dropped"), (ids[1], 0): Decision(ids[1], "edited", "a tiny text.")}
    res = train(train_ds, TrainConfig(method="sft", max_steps=1, batch_size=8, out_dir=str(tmp_path / "d")),
                vlm=vlm, decisions=decisions)
    assert res.metrics["plan"] == {"fixed": 59, "bootstrap": 0, "dropped": 1}
    assert _param_delta(VLM.load(res.out_dir / "model").model, vlm.model) > 0
    cfg = json.loads((res.out_dir / "config.json").read_text())
    assert cfg["dropped"] == {ids[0]: "dropped by review"}


def test_byorn_f_drops_flagged_and_lora_trains_adapters_only(vlm, small_world, tmp_path):
    train_ds, _ = small_world
    res = train(train_ds, TrainConfig(method="byorn-f", lora=True, max_steps=3, batch_size=8, lr=5e-3,
                                      out_dir=str(tmp_path / "l")), vlm=vlm)
    assert res.metrics["plan"] == {"fixed": 36, "bootstrap": 0, "dropped": 24}
    tuned = VLM.load(res.out_dir / "model")  # merged: loads like any model
    assert _param_delta(tuned.model, vlm.model) > 0
    emb_before = vlm.model.get_input_embeddings().weight
    emb_after = tuned.model.get_input_embeddings().weight
    assert torch.equal(emb_before, emb_after)  # LoRA leaves the embeddings alone


def test_train_config_validation():
    with pytest.raises(ValueError):
        TrainConfig(method="magic")
    with pytest.raises(ValueError):
        TrainConfig(ema_decay=1.0)
