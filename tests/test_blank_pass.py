"""The blank-image pass scores again only the turns that have an image (issue 19, cost)."""
import numpy as np

from byorn.audit import AuditConfig, run_audit
from byorn.data import Sample, VLDataset


def test_blank_pass_skips_samples_without_an_image(vlm, small_world, monkeypatch):
    with_image = list(small_world[0][:4])
    text_only = [Sample.single(f"t{i}", None, s.user_text_before(0), s.assistant_texts()[0])
                 for i, s in enumerate(small_world[0][4:8])]
    data = VLDataset(with_image + text_only, "mixed")
    scored = []
    score_batch = vlm.score_batch

    def counting(batch, **kw):
        scored.append(int(batch.inputs["input_ids"].shape[0]))
        return score_batch(batch, **kw)

    monkeypatch.setattr(vlm, "score_batch", counting)
    table = run_audit(data, vlm, AuditConfig(score="mean+grounding", p=0.5, propose=False, maps=False)).table
    assert sum(scored) == 8 + 4  # every sample once, the four with an image once more
    same = [np.allclose(a, b) for a, b in zip(table["surprisals"], table["surprisals_blank"])]
    assert same == [False] * 4 + [True] * 4  # a text-only turn's "blank" scores are its own
    assert np.allclose(table["grounding"].to_numpy()[4:], 0.0)
