"""The guided lesson: plant a backdoor, make it fire, find it, remove it (no gradio here).

Stable API (the app's Lesson tab and ``docs/lesson.ipynb`` use only this):

Step 1, the attack (:mod:`.attack`)
    ``LessonAttack(name="badnets"|"blend"|"vl-trojan"|"dual-key"|"custom", position=..., size=..., colour=...,
    target=..., rate=0.1)`` -- validated on construction (``ValueError`` naming the field);
    ``DEFAULT_ATTACK``; ``PAPER_ATTACKS``, ``PATCH_POSITIONS``; ``attack.describe()``; ``attack.warnings()``
    (plain-words reasons a trigger may not be learned live: too dark, too small, centre, Blend).
    ``build_data(attack, n_train, n_test, seed) -> LessonData``; ``examples(data, n=4) -> (clean, poisoned)``
    lists of :class:`byorn.data.Sample` (``.image``, ``.instruction``, ``.response``).
    ``test_images(n=8)``; ``prepare_upload(image)`` (any upload -> the model's 32 x 32 input; bad ones raise
    ``ValueError``); ``apply_trigger(image, attack)``; ``trigger_instruction(instruction, attack)``.

Loading (:mod:`.lesson`)
    ``load_lesson(folder=None) -> Lesson`` -- the shipped lesson (default attack; manifest checked) or a
    live one, loaded once per process and shared read-only; ``is_shipped(attack)``.
    ``Lesson``: ``.attack``, ``.data``, ``.models`` ({"reference", "sft", "byorn-f", "byorn"} ->
    :class:`LessonModel`, thread-safe), ``.scores``, ``.flagged``, ``.threshold``, ``.results``.

Steps 2 and 5, the playground (:mod:`.steps`)
    ``playground(lesson, image, triggered=bool, models=("reference", "sft"), instruction=...)`` ->
    ``(prepared image, instruction asked, [PlaygroundAnswer(model, label, caption, fired)])``;
    ``caption.tokens`` / ``caption.surprisals`` are under the reference model (``caption.surprisal_model``).
    ``caption(model, image, instruction, scorer=None) -> Caption`` for one model.

Step 3, finding it
    ``histogram(lesson, bins=40)``; ``split_stats(scores, poisoned, p) -> SplitStats`` (flagged count,
    precision, recall, ``summary()``); ``lesson_split(lesson, p)``; ``most_suspicious(lesson, k=8)``;
    ``explain_sample(lesson, sample_id=None) -> Explanation`` (tokens, surprisals, plain-words ``text``).

Step 4, the fix
    ``fix_story(lesson, sample_id=None) -> FixStory`` (``byorn``: [(epoch, bootstrapped response)],
    ``byorn_f``: what BYORn-F did, ``text``).

Step 5, the result
    ``result_table(lesson)`` -> [{"model", "label", "asr_percent", "cider", ...}] for SFT, BYORn-F, BYORn.

Step 6, the limits
    ``limits() -> [Limit(title, what, figures, caught_by)]`` with the project's measured figures.

Live training of a visitor's own trigger (:mod:`.live`)
    ``LIVE_SETTING``; ``describe_setting(LIVE_SETTING)`` (plain words for the UI);
    ``train_live(attack, out_dir, progress=fn(fraction, message), cancel=threading.Event()) -> Lesson``
    (raises :class:`Cancelled` when cancelled); one live run at a time per process (``live_busy()``).

Rebuilding the shipped lesson: ``python scripts/make_lesson_assets.py`` (:mod:`.build`, :mod:`.assets`).
"""
from .attack import (DEFAULT_INSTRUCTION, PAPER_ATTACKS, PATCH_POSITIONS, LessonAttack, LessonData, apply_trigger,
                     build_data, examples, parse_colour, prepare_upload, test_images, trigger_instruction)
from .build import LIVE_SETTING, METHODS, SHIPPED_SETTING, Cancelled, LessonSetting, train_lesson
from .models import MODEL_LABELS, Caption, LessonModel, caption

#: The shipped lesson's attack: BadNets' white 3 px corner patch, the project's target sentence, 10 % poison.
DEFAULT_ATTACK = LessonAttack()

from .lesson import Lesson, forget_lesson, load_lesson, reference_model  # noqa: E402
from .live import describe_setting, is_shipped, live_busy, train_live  # noqa: E402
from .steps import (Explanation, FixStory, Limit, PlaygroundAnswer, ScoredSample, SplitStats,  # noqa: E402
                    explain_sample, fix_story, histogram, lesson_split, limits, most_suspicious, playground,
                    result_table, split_stats)

__all__ = [
    "Caption", "Cancelled", "DEFAULT_ATTACK", "DEFAULT_INSTRUCTION", "Explanation", "FixStory", "LIVE_SETTING",
    "Lesson", "LessonAttack", "LessonData", "LessonModel", "LessonSetting", "Limit", "METHODS", "MODEL_LABELS",
    "PAPER_ATTACKS", "PATCH_POSITIONS", "PlaygroundAnswer", "SHIPPED_SETTING", "ScoredSample", "SplitStats",
    "apply_trigger", "build_data", "caption", "describe_setting", "examples", "explain_sample", "fix_story",
    "forget_lesson", "histogram", "is_shipped", "lesson_split", "limits", "live_busy", "load_lesson",
    "most_suspicious", "parse_colour", "playground", "prepare_upload", "reference_model", "result_table",
    "split_stats", "test_images", "train_lesson", "train_live", "trigger_instruction",
]
