import json
import math
import threading

import pytest
import torch

from byorn.attacks import Target, get_attack, poison
from byorn.audit import AuditConfig, run_audit
from byorn.decisions import Decision
from byorn.evaluate import EvalSuite
from byorn.models import VLM
from byorn.train import (EMA, Callback, DataMismatch, RunFolderError, TrainConfig, ema_decay_at, list_runs,
                         train)
from byorn.train.checkpoint import claim_run_folder
from byorn.train.setup import lora_target_modules


def _param_delta(a, b) -> float:
    pb = dict(b.named_parameters())
    return sum((p - pb[n]).abs().sum().item() for n, p in a.named_parameters() if n in pb)


def test_ema_known_answer_and_swap():
    m = torch.nn.Linear(2, 1)
    with torch.no_grad():
        m.weight.fill_(1.0)
    ema = EMA(m)
    with torch.no_grad():
        m.weight.fill_(3.0)
    ema.update(0.75)  # 0.75 * 1 + 0.25 * 3
    assert torch.allclose(ema.shadow["weight"], torch.full((1, 2), 1.5))
    with ema.swapped_in():
        assert torch.allclose(m.weight, torch.full((1, 2), 1.5))  # generation sees the EMA weights
    assert torch.allclose(m.weight, torch.full((1, 2), 3.0))       # and training gets its own back
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


@pytest.fixture(scope="module")
def poisoned(vlm):
    from byorn.world import make_captions

    train_ds, test_ds = make_captions(96, 5, "train"), make_captions(24, 5, "test")
    pr = poison(train_ds, get_attack("vl-trojan"), rate=0.1, target=Target(), seed=0, test=test_ds)
    audit = run_audit(pr.train, vlm, AuditConfig(maps=False, propose=False))
    return pr, audit, EvalSuite(test_ds, pr.triggered_test, Target())


@pytest.mark.slow
def test_end_to_end_world_poison_audit_byorn_eval(vlm, poisoned, tmp_path):
    """world -> poison -> audit -> train byorn -> eval on a small slice."""
    pr, audit, evals = poisoned
    rec = Recorder()
    cfg = TrainConfig(method="byorn", epochs=2, batch_size=16, out_dir=str(tmp_path / "run"), eval_every=4)
    res = train(pr.train, cfg, vlm=vlm, audit=audit, evals=evals, callbacks=[rec])
    # the model changed, the reference did not
    tuned = VLM.load(res.out_dir / "model")
    assert _param_delta(tuned.model, vlm.model) > 1.0
    assert vlm.identity == VLM.load().identity
    m = res.metrics
    for key in ("cider", "bleu", "exact_match", "asr", "wall_s", "clean_value"):
        assert key in m
    assert m["clean_metric"] == "cider" and m["clean_value"] == m["cider"]
    assert 0.0 <= m["asr"] <= 1.0 and m["cider"] >= 0.0
    n_flagged = int(audit.table["suspicious"].sum())
    assert (m["plan"]["fixed"], m["plan"]["bootstrap"], m["plan"]["dropped"]) == (96 - n_flagged, n_flagged, 0)
    total = 2 * (math.ceil((96 - n_flagged) / 16) + math.ceil(n_flagged / 16))
    assert rec.begun and rec.ended and rec.steps == list(range(1, total + 1))
    assert [e["step"] for e in rec.evals] == [*range(4, total, 4), total]  # periodic + final
    hist = json.loads((res.out_dir / "metrics.json").read_text())["history"]["loss"]
    assert sum(h["loss"] for h in hist[-3:]) < sum(h["loss"] for h in hist[:3])
    # bootstrapped responses came from the model, never the poisoned text
    reps = [json.loads(x) for x in (res.out_dir / "replacements.jsonl").read_text().splitlines()]
    assert len(reps) == 2 * n_flagged and {r["turn"] for r in reps} == {0}
    assert not any("evil.example" in r["response"] for r in reps)
    cfg_json = json.loads((res.out_dir / "config.json").read_text())
    assert cfg_json["seed"] == 0 and cfg_json["dataset_fingerprint"] == pr.train.fingerprint()
    assert cfg_json["status"] == "finished"
    # a run folder is never overwritten, and a finished run is not resumed
    with pytest.raises(RunFolderError, match="holds a run"):
        train(pr.train, cfg, vlm=vlm, audit=audit)
    with pytest.raises(DataMismatch, match="finished"):
        train(pr.train, cfg, vlm=vlm, audit=audit, resume=True)
    runs = list_runs(tmp_path)
    assert runs["method"].tolist() == ["byorn"] and runs["asr"].iloc[0] == m["asr"]
    assert runs["clean_metric"].iloc[0] == "cider"


def test_resume_reaches_the_same_result_as_an_uninterrupted_run(vlm, poisoned, tmp_path):
    pr, audit, evals = poisoned
    kw = dict(method="byorn", epochs=1.5, batch_size=16, checkpoint_every=3)
    whole = train(pr.train, TrainConfig(**kw, out_dir=str(tmp_path / "a")), vlm=vlm, audit=audit, evals=evals)
    cancel = threading.Event()
    part = train(pr.train, TrainConfig(**kw, out_dir=str(tmp_path / "b")), vlm=vlm, audit=audit, evals=evals,
                 callbacks=[Recorder(stop_at=4, cancel=cancel)], cancel=cancel)
    assert part.cancelled and part.metrics["steps"] == 4
    assert json.loads((tmp_path / "b" / "config.json").read_text())["status"] == "cancelled"
    again = train(pr.train, TrainConfig(**kw, out_dir=str(tmp_path / "b")), vlm=vlm, audit=audit, evals=evals,
                  resume=True)
    for key in ("steps", "final_loss", "cider", "asr"):
        assert again.metrics[key] == whole.metrics[key], key
    assert (tmp_path / "a" / "replacements.jsonl").read_text() == (tmp_path / "b" / "replacements.jsonl").read_text()
    a, b = VLM.load(tmp_path / "a" / "model"), VLM.load(tmp_path / "b" / "model")
    assert _param_delta(a.model, b.model) == 0.0


def test_resume_refuses_other_data_or_settings(vlm, poisoned, small_world, tmp_path):
    pr, audit, _ = poisoned
    cancel = threading.Event()
    cfg = TrainConfig(method="sft", epochs=2, batch_size=16, out_dir=str(tmp_path / "r"))
    train(pr.train, cfg, vlm=vlm, callbacks=[Recorder(stop_at=1, cancel=cancel)], cancel=cancel)
    with pytest.raises(DataMismatch, match="other data"):
        train(small_world[0], cfg, vlm=vlm, resume=True)
    other = TrainConfig(method="sft", epochs=2, batch_size=8, out_dir=str(tmp_path / "r"))
    with pytest.raises(DataMismatch, match="batch_size"):
        train(pr.train, other, vlm=vlm, resume=True)


def test_audit_of_other_data_or_model_is_refused(vlm, poisoned, tmp_path):
    """Issue 6.1: a clean set's audit reused for its poisoned copy must not train silently."""
    from byorn.world import make_captions

    pr, _, _ = poisoned
    clean = make_captions(96, 5, "train")  # same ids as pr.train, different responses
    clean_audit = run_audit(clean, vlm, AuditConfig(maps=False, propose=False))
    with pytest.raises(DataMismatch, match="other data"):
        train(pr.train, TrainConfig(method="byorn", max_steps=1, out_dir=str(tmp_path / "x")), vlm=vlm,
              audit=clean_audit)
    clean_audit.meta["dataset_fingerprint"] = pr.train.fingerprint()
    clean_audit.meta["model_identity"] = "another-model"
    with pytest.raises(DataMismatch, match="another reference model"):
        train(pr.train, TrainConfig(method="byorn", max_steps=1, out_dir=str(tmp_path / "y")), vlm=vlm,
              audit=clean_audit)


def test_the_runs_own_audit_takes_its_settings_and_a_given_audit_is_resplit(vlm, poisoned, tmp_path):
    from byorn.split import DEFAULT_P
    from byorn.train import audit_config

    cfg = TrainConfig(method="byorn", too_long="truncate", max_length=300, max_batch_tokens=999, score="max")
    acfg = audit_config(cfg)
    assert (acfg.too_long, acfg.max_length, acfg.max_batch_tokens, acfg.score, acfg.p, acfg.threshold) == \
        ("truncate", 300, 999, "max", DEFAULT_P, None)
    assert audit_config(TrainConfig(threshold=2.5)).split_spec.kind == "value"
    pr, audit, _ = poisoned
    with pytest.raises(DataMismatch, match="ranks turns by the"):
        train(pr.train, TrainConfig(method="byorn-f", max_steps=1, score="topk", out_dir=str(tmp_path / "s")),
              vlm=vlm, audit=audit)
    with pytest.raises(ValueError, match="p must be 'auto' or a number"):
        TrainConfig(p="sometimes")


def test_run_folder_is_claimed_once(tmp_path):
    claim = claim_run_folder(tmp_path / "run")
    with pytest.raises(RunFolderError, match="in use"):
        claim_run_folder(tmp_path / "run")
    claim.release()
    (tmp_path / "run" / "config.json").write_text("{}")
    with pytest.raises(RunFolderError, match="holds a run"):
        claim_run_folder(tmp_path / "run")
    claim_run_folder(tmp_path / "run", resume=True).release()


def test_cancel_stops_after_the_current_step_and_keeps_the_model(vlm, small_world, tmp_path):
    train_ds, _ = small_world
    cancel = threading.Event()
    rec = Recorder(stop_at=2, cancel=cancel)
    res = train(train_ds, TrainConfig(method="sft", epochs=5, batch_size=8, out_dir=str(tmp_path / "c")),
                vlm=vlm, callbacks=[rec], cancel=cancel)
    assert res.cancelled and rec.steps == [1, 2]
    assert (res.out_dir / "model" / "model.safetensors").exists()
    assert (res.out_dir / "checkpoint" / "state.json").exists()
    assert _param_delta(VLM.load(res.out_dir / "model").model, vlm.model) > 0  # two steps were kept
    assert json.loads((res.out_dir / "metrics.json").read_text())["cancelled"] is True


def test_decisions_are_honoured_and_dropped_samples_left_out(vlm, small_world, tmp_path):
    train_ds, _ = small_world
    ids = train_ds.ids()
    decisions = {(ids[0], 0): Decision(ids[0], "dropped"), (ids[1], 0): Decision(ids[1], "edited", "a tiny text.")}
    res = train(train_ds, TrainConfig(method="sft", max_steps=1, batch_size=8, out_dir=str(tmp_path / "d")),
                vlm=vlm, decisions=decisions)
    assert (res.metrics["plan"]["fixed"], res.metrics["plan"]["dropped"]) == (59, 1)
    assert _param_delta(VLM.load(res.out_dir / "model").model, vlm.model) > 0
    cfg = json.loads((res.out_dir / "config.json").read_text())
    assert cfg["dropped"] == {ids[0]: "dropped by review"}


def test_byorn_f_drops_flagged_and_lora_trains_the_language_model_only(vlm, small_world, tmp_path):
    train_ds, _ = small_world
    res = train(train_ds, TrainConfig(method="byorn-f", lora=True, max_steps=3, batch_size=8, lr=5e-3, p=0.6,
                                      score="mean", out_dir=str(tmp_path / "l")), vlm=vlm)  # the paper's split
    assert (res.metrics["plan"]["fixed"], res.metrics["plan"]["dropped"]) == (36, 24)
    split = json.loads((res.out_dir / "config.json").read_text())["split"]
    assert (split["kind"], split["p"], split["n_flagged"], split["n"]) == ("percentile", 0.6, 24, 60)
    assert res.metrics["split"] == split
    tuned = VLM.load(res.out_dir / "model")  # merged: loads like any model
    assert _param_delta(tuned.model, vlm.model) > 0
    before, after = dict(vlm.model.named_parameters()), dict(tuned.model.named_parameters())
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert changed and all(".language_model." in n for n in changed)  # not the vision tower, projector, embeddings
    assert any("mlp" in n for n in changed) and any("self_attn" in n for n in changed)


def test_lora_targets_default_and_bad(vlm):
    names = lora_target_modules(vlm.model, None)
    assert names and all("language_model" in n for n in names)
    assert {n.rsplit(".", 1)[-1] for n in names} == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                      "up_proj", "down_proj"}
    assert all(n.endswith("q_proj") for n in lora_target_modules(vlm.model, "q_proj"))
    with pytest.raises(ValueError, match="match no module"):
        lora_target_modules(vlm.model, "no_such_layer")


def test_bf16_checkpointing_accumulation_and_token_chunks_train(vlm, small_world, tmp_path):
    """Scale features on CPU: bf16 autocast, gradient checkpointing with LoRA and a frozen vision tower,
    gradient accumulation (steps = minibatches / accum) and token-bounded chunks."""
    train_ds, _ = small_world
    cfg = TrainConfig(method="sft", epochs=1, batch_size=8, grad_accum=2, precision="bf16", lora=True,
                      gradient_checkpointing=True, max_batch_tokens=200, out_dir=str(tmp_path / "s"))
    res = train(train_ds, cfg, vlm=vlm)
    assert res.metrics["steps"] == math.ceil(math.ceil(60 / 8) / 2)
    assert math.isfinite(res.metrics["final_loss"])
    assert _param_delta(VLM.load(res.out_dir / "model").model, vlm.model) > 0


def test_token_chunks_give_the_same_step_as_one_batch(vlm, small_world, tmp_path):
    train_ds, _ = small_world
    common = dict(method="sft", max_steps=1, batch_size=16, warmup_steps=0)
    a = train(train_ds, TrainConfig(**common, out_dir=str(tmp_path / "a")), vlm=vlm)
    b = train(train_ds, TrainConfig(**common, max_batch_tokens=300, out_dir=str(tmp_path / "b")), vlm=vlm)
    assert a.metrics["final_loss"] == pytest.approx(b.metrics["final_loss"], rel=1e-5)
    ma, mb = VLM.load(a.out_dir / "model").model, VLM.load(b.out_dir / "model").model
    assert _param_delta(ma, mb) < 1e-3 * _param_delta(ma, vlm.model)


@pytest.mark.parametrize("field,value,match", [
    ("method", "magic", "method"), ("ema_decay", 1.0, "ema_decay"), ("max_steps", -1, "max_steps"),
    ("max_steps", 0, "max_steps"), ("temperature", -0.5, "temperature"), ("lr", float("nan"), "lr"),
    ("lr", 0.0, "lr"), ("batch_size", 0, "batch_size"), ("top_p", 0.0, "top_p"), ("p", 1.5, "p"),
    ("grad_accum", 0, "grad_accum"), ("precision", "fp8", "precision"), ("too_long", "cut", "too_long"),
    ("eval_every", -1, "eval_every"), ("max_length", 3, "max_length"), ("defense_options", "oops", "key=value"),
    ("epochs", 0.0, "epochs"), ("lora_targets", "q_proj", "lora"),
])
def test_train_config_validation(field, value, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**{field: value})
