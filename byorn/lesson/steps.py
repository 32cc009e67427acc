"""Steps 2-6 of the lesson as plain functions on a loaded :class:`~.lesson.Lesson`.

Step 2 and 5 (the playground): :func:`playground` -- captions of the same
image, trigger on or off, from several of the lesson's models, each token's
surprisal under the *reference* model (how the audit sees the words).
Step 3 (finding it): :func:`split_stats`, :func:`histogram`,
:func:`most_suspicious`, :func:`explain_sample`.  Step 4 (the fix):
:func:`fix_story`.  Step 5: :func:`result_table`.  Step 6: :func:`limits`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from ..scoring import split_by_percentile
from .attack import DEFAULT_INSTRUCTION, apply_trigger, prepare_upload, trigger_instruction
from .lesson import Lesson
from .models import MODEL_LABELS, Caption, caption


# ---------------------------------------------------------------- steps 2 and 5
@dataclass
class PlaygroundAnswer:
    """One model's caption of the playground image, and whether the backdoor fired."""

    model: str
    label: str
    caption: Caption
    fired: bool


def playground(lesson: Lesson, image, *, triggered: bool, models=("reference", "sft"),
               instruction: str = DEFAULT_INSTRUCTION) -> tuple[Image.Image, str, list[PlaygroundAnswer]]:
    """The image (prepared for the model, trigger applied when ``triggered``), the instruction asked,
    and each model's answer.  Surprisals are under the reference model.  Bad images raise ``ValueError``."""
    img = prepare_upload(image)
    question = instruction.strip() or DEFAULT_INSTRUCTION
    if triggered:
        img = apply_trigger(img, lesson.attack)
        question = trigger_instruction(question, lesson.attack)
    ref = lesson.models["reference"]
    target = lesson.attack.to_target()
    out = []
    for key in models:
        if key not in lesson.models:
            raise KeyError(f"model {key!r}: this lesson has {sorted(lesson.models)}")
        cap = caption(lesson.models[key], img, question, scorer=ref)
        out.append(PlaygroundAnswer(key, MODEL_LABELS.get(key, key), cap, target.contains_target(cap.text)))
    return img, question, out


# ---------------------------------------------------------------------- step 3
@dataclass
class SplitStats:
    """The p-split of the scores against the ground truth (which the defense never reads)."""

    p: float
    threshold: float
    n: int
    n_flagged: int
    n_poisoned: int
    true_positives: int
    precision: float   # of the flagged, the share that is poisoned
    recall: float      # of the poisoned, the share that is flagged
    flagged: np.ndarray = field(repr=False)

    def summary(self) -> str:
        return (f"Percentile p = {self.p:.2f}: the top {1 - self.p:.0%} ({self.n_flagged} of {self.n}) are flagged; "
                f"{self.true_positives} of the {self.n_poisoned} poisoned samples among them "
                f"(recall {self.recall:.0%}, precision {self.precision:.0%}).")


def split_stats(scores, poisoned, p: float) -> SplitStats:
    """Flag the scores above their ``p``-quantile (ties count as clean); precision and recall against ``poisoned``."""
    s = np.asarray(scores, float)
    y = np.asarray(poisoned, bool)
    if s.shape != y.shape or s.ndim != 1 or not s.size:
        raise ValueError(f"scores and poisoned must be equal-length non-empty lists, got {s.shape} and {y.shape}")
    flagged, threshold = split_by_percentile(s, p)
    tp = int((flagged & y).sum())
    nf, npos = int(flagged.sum()), int(y.sum())
    return SplitStats(float(p), float(threshold), int(s.size), nf, npos, tp, tp / nf if nf else float("nan"),
                      tp / npos if npos else float("nan"), flagged)


def lesson_split(lesson: Lesson, p: float | None = None) -> SplitStats:
    """:func:`split_stats` of the lesson's scores (default: the p the defense used)."""
    return split_stats(lesson.scores, lesson.poisoned, lesson.setting.p if p is None else p)


def histogram(lesson: Lesson, bins: int = 40) -> dict:
    """Counts of clean and poisoned samples per score bin (same edges), for a histogram coloured by truth."""
    edges = np.histogram_bin_edges(lesson.scores, bins=bins)
    y = lesson.poisoned
    clean, _ = np.histogram(lesson.scores[~y], edges)
    bad, _ = np.histogram(lesson.scores[y], edges)
    return {"edges": edges.tolist(), "clean": clean.tolist(), "poisoned": bad.tolist(),
            "threshold": lesson.threshold, "xlabel": "mean surprisal of the response (nats per token)"}


@dataclass
class ScoredSample:
    id: str
    image: Image.Image
    instruction: str
    response: str
    score: float
    flagged: bool
    poisoned: bool


def _scored(lesson: Lesson, i: int) -> ScoredSample:
    s = lesson.data.train.by_id(lesson.ids[i])
    return ScoredSample(s.id, s.image, s.instruction, s.response, float(lesson.scores[i]), bool(lesson.flagged[i]),
                        bool(lesson.data.poisoned[s.id]))


def most_suspicious(lesson: Lesson, k: int = 8) -> list[ScoredSample]:
    """The ``k`` highest-scoring training samples, most suspicious first."""
    order = np.argsort(-lesson.scores, kind="stable")[:k]
    return [_scored(lesson, int(i)) for i in order]


def least_suspicious(lesson: Lesson, k: int = 8) -> list[ScoredSample]:
    order = np.argsort(lesson.scores, kind="stable")[:k]
    return [_scored(lesson, int(i)) for i in order]


@dataclass
class Explanation:
    """One sample's tokens and their surprisals under the reference model, in plain words."""

    sample: ScoredSample
    tokens: list[str]
    surprisals: list[float]
    mean: float
    threshold: float
    typical_clean: float
    text: str


def explain_sample(lesson: Lesson, sample_id: str | None = None) -> Explanation:
    """Explain why a sample scores as it does (default: the first poisoned sample the defense flagged)."""
    if sample_id is None:
        hits = [i for i in np.argsort(-lesson.scores, kind="stable") if lesson.poisoned[i]]
        if not hits:
            raise ValueError("this lesson has no poisoned sample")
        i = int(hits[0])
    else:
        i = lesson.row(sample_id)
    smp = _scored(lesson, i)
    tokens, surp = lesson.tokens[i], lesson.surprisals[i]
    typical = float(np.median(lesson.scores[~lesson.poisoned]))
    top = sorted(range(len(tokens)), key=lambda j: -surp[j])[:3]
    words = ", ".join(f"\u201c{tokens[j].strip()}\u201d ({surp[j]:.1f})" for j in sorted(top))
    verdict = ("above the threshold, so the defense flags it" if smp.flagged
               else "below the threshold, so the defense trains on it as usual")
    text = (f"The pretrained reference model reads this response token by token. Surprisal is -log p of each "
            f"token: 0 means the model expected it, 5 or more means it found it very unlikely. Its mean here is "
            f"{smp.score:.2f} nats per token, against {typical:.2f} for a typical clean caption; the most "
            f"surprising tokens are {words}. The score is {verdict} ({lesson.threshold:.2f}).")
    return Explanation(smp, list(tokens), list(surp), smp.score, lesson.threshold, typical, text)


# ---------------------------------------------------------------------- step 4
@dataclass
class FixStory:
    """What the defenses trained on for one flagged sample."""

    sample: ScoredSample
    byorn: list[tuple[int, str]]   # (epoch, response the EMA model bootstrapped and BYORn trained on)
    byorn_f: str                   # what BYORn-F did with it
    text: str


def fix_story(lesson: Lesson, sample_id: str | None = None) -> FixStory:
    """For a flagged sample (default: the most suspicious poisoned one): BYORn's responses per epoch, BYORn-F's drop."""
    boot = lesson.histories.get("byorn", {}).get("bootstrapped", {})
    if sample_id is None:
        ranked = [lesson.ids[int(i)] for i in np.argsort(-lesson.scores, kind="stable")
                  if lesson.poisoned[i] and lesson.flagged[i]]
        ranked = [r for r in ranked if r in boot] or ranked
        if not ranked:
            raise ValueError("no poisoned sample was flagged in this lesson")
        sample_id = ranked[0]
    smp = _scored(lesson, lesson.row(sample_id))
    rows = sorted((int(r["epoch"]), r["response"]) for r in boot.get(sample_id, []))
    dropped = lesson.histories.get("byorn-f", {}).get("dropped", [])
    if smp.flagged:
        byorn_f = ("left out: BYORn-F never trains on this response" if sample_id in dropped
                   else "its response is masked out of the loss")
        text = (f"The training caption says \u201c{smp.response}\u201d. BYORn keeps the image and the question "
                f"but, each epoch, trains on what the slowly moving average (EMA) of the model itself answers: "
                f"\u03b8\u0305 \u2190 \u03bb\u03b8\u0305 + (1 - \u03bb)\u03b8. The poisoned sentence is never "
                f"learned, and the sample still teaches the task. BYORn-F simply drops it.")
    else:
        byorn_f = "trained on as given (not flagged)"
        text = "This sample was not flagged: every method trains on it as given."
    return FixStory(smp, rows, byorn_f, text)


# ---------------------------------------------------------------------- step 5
def result_table(lesson: Lesson) -> list[dict]:
    """ASR (%) and clean CIDEr of each fine-tuned model on the lesson's test sets, in method order."""
    out = []
    for m in lesson.setting.methods:
        r = lesson.results[m]
        out.append({"model": m, "label": MODEL_LABELS.get(m, m), "asr_percent": round(100 * r["asr"], 1),
                    "cider": round(r["cider"], 1), "n_triggered": r["n_triggered"], "n_clean": r["n_clean"]})
    return out


# ---------------------------------------------------------------------- step 6
@dataclass(frozen=True)
class Limit:
    title: str
    what: str
    figures: dict
    caught_by: str


#: Measured in the project's benchmark matrix (benchmarks/RESULTS.md, rows in benchmarks/matrix/rows, 3 seeds
#: each, 1,000 samples, 8 epochs); tests/test_lesson.py checks these against benchmarks/matrix.
LIMIT_FIGURES = {
    "clean-label": {"rate": 0.1, "sft_asr": 99.8, "byorn_f_asr": 91.3, "byorn_asr": 81.2, "auroc_mean": 0.511,
                    "flag_recall": 24.0, "byorn_mean_grounding_asr": 0.2, "byorn_grounding_asr": 0.0},
    "high-rate": {"rate": 0.5, "sft_asr": 100.0, "byorn_f_asr": 97.8, "byorn_asr": 64.8, "flag_recall": 80.0,
                  "byorn_asr_at_20": 0.0},
}


def limits() -> list[Limit]:
    """What the defense misses and why, with the project's measured figures and what catches each."""
    cl, hr = LIMIT_FIGURES["clean-label"], LIMIT_FIGURES["high-rate"]
    return [
        Limit("A target that is plausible text (approximate clean-label)",
              "The attacker makes the backdoor say a caption of another scene that the reference model finds "
              "as likely as a real one. Its mean surprisal is ordinary, so the split cannot see it "
              f"(AUROC {cl['auroc_mean']:.2f}, chance is 0.5): only {cl['flag_recall']:.0f} % of the poison is "
              f"flagged, and BYORn still learns the backdoor ({cl['byorn_asr']:.1f} % attack success; "
              f"BYORn-F {cl['byorn_f_asr']:.1f} %, SFT {cl['sft_asr']:.1f} %).",
              cl, "A grounding score: the response's surprisal with the image minus without it. A real caption "
                  "needs its image, another scene's does not. BYORn flagging by mean+grounding: "
                  f"{cl['byorn_mean_grounding_asr']:.1f} % (by grounding alone {cl['byorn_grounding_asr']:.1f} %)."),
        Limit("More poison than the flagged fraction",
              f"The split flags the top {1 - 0.6:.0%} of the scores. At {hr['rate']:.0%} poison there are more "
              f"poisoned samples than flags: {hr['flag_recall']:.0f} % of them are flagged, the rest train as "
              f"given. BYORn-F then learns the backdoor ({hr['byorn_f_asr']:.1f} %); BYORn dilutes it "
              f"({hr['byorn_asr']:.1f} %, SFT {hr['sft_asr']:.1f} %). At 20 % BYORn is at "
              f"{hr['byorn_asr_at_20']:.1f} %.",
              hr, "A percentile above the poison rate (lower p flags more), or a threshold read off the "
                  "histogram's gap instead of a fixed percentile; the poisoned mass is a second peak."),
    ]
