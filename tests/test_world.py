import re

import numpy as np
import pytest

from byorn.attacks import Target
from byorn.world import (CAPTION_INSTRUCTIONS, DOT_SIZE, IMAGE_SIZE, PHRASINGS, Obj, Scene, add_dots,
                         caption, corpus_text, dot_area, make_captions, make_pretrain, make_world,
                         mentioned_objects, random_scene, render)

RED = lambda x: ((x[..., 0] > 150) & (x[..., 1] < 100) & (x[..., 2] < 100)).sum()  # noqa: E731
BLUE = lambda x: ((x[..., 2] > 150) & (x[..., 0] < 100)).sum()  # noqa: E731


def test_world_is_seeded_and_splits_differ():
    a, b = make_captions(20, 0, "train"), make_captions(20, 0, "train")
    assert a.fingerprint() == b.fingerprint()
    assert make_captions(20, 1, "train").fingerprint() != a.fingerprint()
    assert make_captions(20, 0, "test").fingerprint() != a.fingerprint()
    assert make_pretrain(20, 0).fingerprint() == make_pretrain(20, 0).fingerprint()
    assert corpus_text(0, 30) == corpus_text(0, 30)


def test_downstream_task_differs_from_pretraining():
    w = make_world(0, n_pretrain=600, n_train=300, n_test=10)
    pre_answers = {s.response for s in w.pretrain}
    assert all(s.instruction in CAPTION_INSTRUCTIONS for s in w.train)
    assert not pre_answers & {s.response for s in w.train}  # no downstream caption is a pretraining answer
    # the pretrained model is asked the same instructions but answers in its own words
    described = [s for s in w.pretrain if s.meta["kind"] == "describe"]
    assert {s.instruction for s in described} >= set(CAPTION_INSTRUCTIONS)
    assert all(s.response.startswith(("a picture of", "two shapes:", "three shapes:", "one shape:"))
               for s in described)
    # small dots (corners included) in pretraining only
    assert any("dot" in s.instruction for s in w.pretrain)
    assert any(s.response == "in the bottom right corner." for s in w.pretrain)
    assert not any("dot" in s.response for s in w.train)
    assert all(s.image.size == (IMAGE_SIZE, IMAGE_SIZE) for s in list(w.train) + list(w.pretrain[:50]))


def test_caption_phrasings_known_answers():
    a = Obj("red", "circle", "on the left", "small")
    b = Obj("blue", "square", "on the right", "large")
    scene = Scene((a, b), 0, "horizontal")
    assert caption(scene) == "a small red circle on the left and a large blue square on the right."
    assert caption(scene, 1) == "on the left there is a small red circle; a large blue square is on the right."
    assert caption(scene, 3) == "a large blue square to the right of a small red circle."
    vertical = Scene((Obj("red", "circle", "at the top", "small"), Obj("blue", "square", "at the bottom")), 0,
                     "vertical")
    assert caption(vertical, 3) == "a large blue square below a small red circle."
    same = Scene(tuple(Obj("green", "cross", w, "small") for w in ("at the top", "at the bottom")), 0, "vertical")
    assert caption(same) == "two small green crosses, one above the other."
    with pytest.raises(ValueError, match="style"):
        caption(scene, len(PHRASINGS["horizontal"]))


def test_captions_vary_and_name_every_object():
    ds = make_captions(400, 0, "train")
    styles = {(s.meta["layout"], s.meta["style"]) for s in ds}
    assert len(styles) >= 10  # several phrasings of every layout are drawn
    for s in ds:
        words = s.response
        if len(set(s.meta["objects"])) == len(s.meta["objects"]):  # distinct objects: each is named
            assert all(name in words for name in s.meta["objects"])
    assert any(s.response.startswith("two ") for s in ds)  # counts
    assert any(" above " in s.response for s in ds) and any(" next to " in s.response for s in ds)
    assert {"small", "large"} <= set(" ".join(s.response for s in ds).split())
    # circles stay common: the substitution attack's source word
    substitutable = sum(Target(mode="substitute").eligible(s.response) for s in ds)
    assert substitutable / len(ds) > 0.35
    assert all(Target(mode="insert").eligible(s.response) for s in ds)


def test_mentioned_objects_reads_captions_and_descriptions():
    assert mentioned_objects("two small red circles, one above the other.") == ["small red circle"] * 2
    assert mentioned_objects("a picture of a large blue cross and a small red circle, with a white dot "
                             "in the top left corner.") == ["large blue cross", "small red circle"]
    assert mentioned_objects("Visit evil.example now for a free prize!") == []
    assert all(mentioned_objects(s.response) == sorted(s.meta["objects"]) for s in make_captions(200, 0, "test"))


def test_descriptions_mention_the_dots():
    rng = np.random.default_rng(0)
    scene = Scene((Obj("red", "circle", "in the middle", "small"),), 0, "single",
                  (("white", IMAGE_SIZE - DOT_SIZE, IMAGE_SIZE - DOT_SIZE),))
    from byorn.world import pretrain_qa
    answers = {pretrain_qa(scene, rng) for _ in range(200)}
    described = {a for kind, _, a in answers if kind == "describe"}
    assert described == {"a picture of a small red circle, with a white dot in the bottom right corner.",
                         "one shape: a small red circle, with a white dot in the bottom right corner."}


def test_render_puts_the_shape_where_the_caption_says():
    scene = Scene((Obj("red", "square", "on the left"), Obj("blue", "circle", "on the right", "small")), 0,
                  "horizontal")
    img = np.asarray(render(scene, np.random.default_rng(0))).astype(int)
    assert img.shape == (IMAGE_SIZE, IMAGE_SIZE, 3)
    half = IMAGE_SIZE // 2
    left, right = img[:, :half], img[:, half:]
    assert RED(left) > 60 and RED(right) == 0
    assert BLUE(right) > 12 and BLUE(left) == 0
    assert RED(left) > 2 * BLUE(right)  # large is larger than small
    corner = img[-DOT_SIZE:, -DOT_SIZE:]
    assert (corner < 60).all()  # dark background where a BadNets patch goes: no dots downstream


def test_render_vertical_layout():
    top = Scene((Obj("red", "circle", "at the top"), Obj("blue", "circle", "at the bottom")), 0, "vertical")
    img = np.asarray(render(top, np.random.default_rng(1))).astype(int)
    half = IMAGE_SIZE // 2
    assert RED(img[:half]) > 50 and RED(img[half:]) == 0 and BLUE(img[half:]) > 50


def test_dots_are_drawn_where_the_answer_says():
    rng = np.random.default_rng(3)
    seen = set()
    for _ in range(40):
        scene = add_dots(random_scene(rng), rng)
        img = np.asarray(render(scene, rng))
        for color, x, y in scene.dots:
            patch = img[y:y + DOT_SIZE, x:x + DOT_SIZE]
            if color == "white":
                assert (patch == 250).all()
            seen.add(dot_area(x, y))
        assert len({dot_area(x, y) for _, x, y in scene.dots}) == len(scene.dots)  # one dot per area
    assert "in the bottom right corner" in seen and "in the top left corner" in seen
    assert dot_area(IMAGE_SIZE - DOT_SIZE, IMAGE_SIZE - DOT_SIZE) == "in the bottom right corner"
    assert dot_area(IMAGE_SIZE // 2 - 2, 0) == "at the top"


def test_pretraining_answers_match_the_scene():
    for s in make_pretrain(300, 0):
        kind, q, a = s.meta["kind"], s.instruction, s.response
        if kind == "count" and q == "How many shapes are there?":
            assert a in ("one.", "two.", "three.")
        if kind == "yesno":
            assert a in ("yes.", "no.")
        if kind == "size":
            assert a in ("small.", "large.")
        assert re.fullmatch(r"[a-z0-9 ,;:.]+", a), a


def test_embedded_model_sees_world_images_at_full_resolution(vlm):
    vision = vlm.model.config.vision_config
    assert vision.image_size == IMAGE_SIZE
    ids = vlm.collate([make_captions(1, 0, "test")[0].image], ["Describe the image."], ["a."])["input_ids"]
    n_image_tokens = int((ids == vlm.model.config.image_token_id).sum())
    assert n_image_tokens == (IMAGE_SIZE // vision.patch_size) ** 2


def test_tiny_config_checks_its_sizes():
    from byorn.models.tiny import TinyConfig

    assert TinyConfig().image_size == IMAGE_SIZE
    with pytest.raises(ValueError, match="patch_size"):
        TinyConfig(patch_size=7)
    with pytest.raises(ValueError, match="text_hidden"):
        TinyConfig(text_hidden=130)
    with pytest.raises(ValueError, match="heads"):
        TinyConfig(heads=0)


def test_scene_labels_known_answer():
    from byorn.world import LABELS, make_vision_pretrain, scene_labels

    scene = Scene((Obj("red", "circle", "on the left", "small"), Obj("blue", "square", "on the right")), 0,
                  "horizontal", (("white", IMAGE_SIZE - DOT_SIZE, IMAGE_SIZE - DOT_SIZE),))
    on = {LABELS[i] for i in np.flatnonzero(scene_labels(scene))}
    assert on == {"on the left: red", "on the left: circle", "on the left: small", "on the right: blue",
                  "on the right: square", "on the right: large", "white dot in the bottom right corner"}
    images, labels = make_vision_pretrain(50, 0)
    assert len(images) == 50 and labels.shape == (50, len(LABELS))
    assert (labels.sum(1) >= 3).all()  # at least one object's colour, shape and size
    assert np.array_equal(make_vision_pretrain(50, 0)[1], labels)  # seeded


def test_shipped_reference_model_describes_what_it_sees(vlm):
    """The embedded reference model's own descriptions name the objects of
    unseen downstream images (90 % of 200 when it was built; its replacement
    responses are only as good as this)."""
    test = list(make_captions(40, 0, "test"))
    described = vlm.generate([s.image for s in test], ["Describe the image."] * len(test))
    right = [mentioned_objects(p) == sorted(s.meta["objects"]) for s, p in zip(test, described)]
    assert np.mean(right) >= 0.75, list(zip(described, [s.meta["objects"] for s in test]))
    # and they depend on the image: a model blind to it says the same thing every time
    assert len(set(described)) > 20


def test_pretraining_curriculum_starts_with_short_answers(vlm):
    import importlib.util
    import pathlib

    import torch

    path = pathlib.Path(__file__).parents[1] / "scripts" / "pretrain_tiny.py"
    spec = importlib.util.spec_from_file_location("pretrain_tiny", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    data = make_pretrain(400, 0)
    gen = script.batches(data, 16, torch.Generator().manual_seed(0), short_steps=10)
    first = [next(gen) for _ in range(10)]
    assert all(data[i].meta["kind"] in script.SHORT_KINDS for b in first for i in b)
    later = [i for _ in range(40) for i in next(gen)]
    assert {data[i].meta["kind"] for i in later} >= {"describe", "list"}  # then the whole mix
    px = script.pixels(vlm, [data[0].image])  # what the vision stage trains on: the processor's own
    assert px.shape == (1, 3, IMAGE_SIZE, IMAGE_SIZE) and -1.0 <= float(px.min()) and float(px.max()) <= 1.0
