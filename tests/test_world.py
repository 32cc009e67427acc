import numpy as np

from byorn.world import CAPTION_INSTRUCTIONS, IMAGE_SIZE, Obj, Scene, caption, make_captions, make_pretrain, make_world, render


def test_world_is_seeded_and_splits_differ():
    a, b = make_captions(20, 0, "train"), make_captions(20, 0, "train")
    assert a.fingerprint() == b.fingerprint()
    assert make_captions(20, 1, "train").fingerprint() != a.fingerprint()
    assert make_captions(20, 0, "test").fingerprint() != a.fingerprint()


def test_downstream_task_differs_from_pretraining():
    w = make_world(0, n_pretrain=200, n_train=50, n_test=10)
    pre_answers = {s.response for s in w.pretrain}
    assert all(s.instruction in CAPTION_INSTRUCTIONS for s in w.train)
    assert not pre_answers & {s.response for s in w.train}  # no downstream caption is a pretraining answer
    assert all(s.image.size == (IMAGE_SIZE, IMAGE_SIZE) for s in w.train)
    assert any("dot" in s.instruction for s in w.pretrain)


def test_caption_known_answer_and_articles():
    scene = Scene((Obj("orange", "cross", "on the left"), Obj("red", "circle", "on the right")), 0, "horizontal")
    assert caption(scene) == "an orange cross on the left and a red circle on the right."


def test_render_puts_the_shape_where_the_caption_says():
    scene = Scene((Obj("red", "square", "on the left"), Obj("blue", "circle", "on the right")), 0, "horizontal")
    img = np.asarray(render(scene, np.random.default_rng(0))).astype(int)
    left, right = img[:, :16], img[:, 16:]
    red = lambda x: ((x[..., 0] > 150) & (x[..., 2] < 100)).sum()
    blue = lambda x: ((x[..., 2] > 150) & (x[..., 0] < 100)).sum()
    assert red(left) > 50 and red(right) == 0
    assert blue(right) > 50 and blue(left) == 0
    assert (img[0, 0] < 60).all()  # a dark background in the corner: no dots downstream
