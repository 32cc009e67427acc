"""The length cap of bootstrapped responses comes from the data's own responses (issue 19, cost)."""
import json

from byorn.audit import AuditConfig, run_audit
from byorn.data import VLDataset
from byorn.defenses import Plan, PlannedSample
from byorn.train import TrainConfig, train
from byorn.train.loop import bootstrap_token_cap


class WordTokenizer:
    """One token per word: lengths are known answers."""

    def __call__(self, texts, add_special_tokens=False):
        return {"input_ids": [t.split() for t in texts]}


def _plan(base, lengths, flagged):
    items = []
    for i, n in enumerate(lengths):
        sample = base.with_assistant(0, " ".join(["w"] * n))
        items.append(PlannedSample(sample, frozenset({0}) if i in flagged else frozenset()))
    return Plan(items)


def test_cap_is_a_high_quantile_of_the_responses_plus_a_margin(small_world):
    base = small_world[0][0]
    tok = WordTokenizer()
    # 200 responses of 10 words; the flagged two are short (a replace target): the cap follows the bulk,
    # or a clean answer would be cut to the poison's length
    assert bootstrap_token_cap(_plan(base, [10] * 198 + [3, 3], {198, 199}), tok) == 10 + 4
    # one flagged response of 60 words among 200: the bulk's 99th percentile is 10, the flagged ones' 60;
    # the longer wins, with a margin of 10 % above 40 tokens
    assert bootstrap_token_cap(_plan(base, [10] * 199 + [60], {199}), tok) == 60 + 6
    # nothing bootstrapped: no cap
    assert bootstrap_token_cap(_plan(base, [10] * 5, set()), tok) is None


def test_bootstrapped_responses_stop_at_the_datas_length(vlm, small_world, tmp_path):
    # responses of two or three words: the embedded model's own captions (13-19 tokens) run longer
    short = VLDataset([s.with_assistant(0, " ".join(s.assistant_texts()[0].split()[:3 - i % 2]))
                       for i, s in enumerate(small_world[0][:32])], "short")
    audit = run_audit(short, vlm, AuditConfig(p=0.5, maps=False, propose=False))
    cfg = TrainConfig(method="byorn", max_steps=2, batch_size=16, out_dir=str(tmp_path / "run"))
    res = train(short, cfg, vlm=vlm, audit=audit)
    flagged = {(i, int(k)) for i, k in zip(audit.table.loc[audit.table["suspicious"], "id"],
                                           audit.table.loc[audit.table["suspicious"], "turn"])}
    lengths = [len(vlm.tokenizer(t, add_special_tokens=False)["input_ids"])
               for t in [s.assistant_texts()[0] for s in short]]
    cap = max(lengths) + 4  # the 99th percentile (higher) of 32 lengths is the longest
    reps = [json.loads(x) for x in (res.out_dir / "replacements.jsonl").read_text().splitlines()]
    assert reps and {(r["id"], r["turn"]) for r in reps} <= flagged
    n_tokens = [len(vlm.tokenizer(" " + r["response"], add_special_tokens=False)["input_ids"]) for r in reps]
    assert max(n_tokens) <= cap < cfg.max_new_tokens
    assert res.metrics["bootstrap"]["max_new_tokens"] == cap
    assert res.metrics["bootstrap"]["responses"] == len(reps)
    assert res.metrics["bootstrap"]["at_cap"] == sum(n >= cap for n in n_tokens) > 0  # the model ran on
