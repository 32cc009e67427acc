"""Tests for byorn.attacks: triggers change exactly what they should, and
poison() plants exactly the requested backdoor, reproducibly."""
import json

import numpy as np
import pytest
from PIL import Image

from byorn.attacks import (ATTACKS, DEFAULT_TARGET_SENTENCE, Attack, Target, badnets_patch,
                           blend, get_attack, insert_token, noise_pattern, poison, register,
                           scaled_patch_size, sig)
from byorn.data import Sample, VLDataset

COLOUR = (10, 120, 200)
SHAPES = ["circle", "square", "triangle"]


def solid(size=(32, 32), colour=COLOUR):
    return Image.new("RGB", size, colour)


def make_dataset(n=20, prefix="s", name="train"):
    samples = []
    for i in range(n):
        shape = SHAPES[i % 3]
        img = solid(colour=(i * 10 % 256, 50, 100))
        samples.append(Sample.single(f"{prefix}{i}", img, "Describe the image.",
                              f"a red {shape} on the left.", {"src": i}))
    return VLDataset(samples, name=name)


# ---------------------------------------------------------------- triggers

def test_badnets_white_patch_bottom_right_only():
    out = np.asarray(badnets_patch(solid()))
    assert (out[-3:, -3:] == 255).all()
    rest = out.copy()
    rest[-3:, -3:] = COLOUR
    assert (rest == np.array(COLOUR, np.uint8)).all()


@pytest.mark.parametrize("corner,rows,cols", [
    ("top-left", slice(0, 3), slice(0, 3)), ("top-right", slice(0, 3), slice(29, 32)),
    ("bottom-left", slice(29, 32), slice(0, 3))])
def test_badnets_corner(corner, rows, cols):
    out = np.asarray(badnets_patch(solid(), corner=corner))
    changed = (out != np.array(COLOUR, np.uint8)).any(-1)
    expected = np.zeros((32, 32), bool)
    expected[rows, cols] = True
    assert (changed == expected).all()


def test_badnets_scales_with_image_and_noise_is_seeded():
    assert scaled_patch_size((64, 96)) == 6
    assert scaled_patch_size((8, 8)) == 1
    out = np.asarray(badnets_patch(solid((64, 96)), kind="noise", seed=3))  # H=96, W=64
    assert out.shape == (96, 64, 3)
    assert (out[-6:, -6:] == noise_pattern((6, 6, 3), 3)).all()
    assert (out[:-6] == np.array(COLOUR, np.uint8)).all()
    assert badnets_patch(solid(), kind="noise", seed=3).tobytes() == \
        badnets_patch(solid(), kind="noise", seed=3).tobytes()


def test_blend_formula_at_a_pixel():
    pattern = Image.new("RGB", (32, 32), (255, 0, 100))
    out = np.asarray(blend(solid(), alpha=0.2, pattern=pattern)).astype(float)
    expected = np.rint(0.8 * np.array(COLOUR) + 0.2 * np.array([255, 0, 100]))
    assert (out[5, 7] == expected).all()
    default = np.asarray(blend(solid())).astype(float)  # alpha 0.2, 2-px checkerboard
    c = np.array(COLOUR, dtype=float)
    assert np.allclose(default[0, 0], np.rint(0.8 * c))            # black cell
    assert np.allclose(default[0, 2], np.rint(0.8 * c + 0.2 * 255))  # white cell
    assert np.allclose(default[0, 1], default[1, 0])                # same 2x2 cell
    noise = np.asarray(blend(solid(), alpha=0.15, pattern=Image.fromarray(noise_pattern((32, 32, 3), 1))))
    pat = noise_pattern((32, 32, 3), 1).astype(float)
    assert np.allclose(noise[3, 4].astype(float), np.rint(0.85 * c + 0.15 * pat[3, 4]))


def test_sig_adds_the_same_sinusoid_to_every_row():
    out = np.asarray(sig(solid(colour=(128, 128, 128)))).astype(float)
    signal = 40 * np.sin(2 * np.pi * np.arange(32) * 6 / 32)
    assert np.allclose(out[0, :, 0], np.rint(128 + signal))
    assert (out == out[:1]).all()  # every row identical
    assert (out[..., 0] == out[..., 2]).all()


def test_insert_token_positions():
    text = "What do you see?"
    assert insert_token(text, "cf") == "What do you see? cf"
    assert insert_token(text, "Consider", "prepend") == "Consider What do you see?"
    got = insert_token(text, "zbw", "random", np.random.default_rng(0))
    k = int(np.random.default_rng(0).integers(0, 5))
    words = text.split()
    assert got.split() == words[:k] + ["zbw"] + words[k:]
    with pytest.raises(ValueError):
        insert_token(text, "zbw", "random")


# ---------------------------------------------------------------- attacks

def test_registry_and_get_attack():
    assert {"badnets", "blend", "sig", "text", "vl-trojan", "dual-key"} <= set(ATTACKS)
    a = get_attack("vl-trojan", token="tq")
    assert a.token == "tq" and a.name == "vl-trojan" and "vl-trojan" in a.description
    with pytest.raises(ValueError, match="unknown attack"):
        get_attack("nope")
    with pytest.raises(ValueError, match="no parameter"):
        get_attack("sig", alpha=0.1)
    with pytest.raises(ValueError):
        get_attack("blend", alpha=0.0)


def test_register_new_attack_in_a_few_lines():
    from dataclasses import dataclass

    @register("_test-grey")
    @dataclass
    class Grey(Attack):
        def apply_image(self, image):
            return image.convert("L").convert("RGB")
    try:
        s = make_dataset(1)[0]
        out = get_attack("_test-grey").trigger(s)
        assert out.image.getpixel((0, 0))[0] == out.image.getpixel((0, 0))[1]
    finally:
        ATTACKS.pop("_test-grey")


def test_trigger_image_and_text_parts():
    s = make_dataset(1)[0]
    vt = get_attack("vl-trojan").trigger(s, np.random.default_rng(0))
    assert vt.instruction == "Describe the image. cf"
    assert np.asarray(vt.image)[-1, -1].tolist() == [255, 255, 255]
    assert vt.response == s.response and vt.id == s.id
    img_only = get_attack("badnets").trigger(s)
    assert img_only.instruction == s.instruction
    txt_only = get_attack("text").trigger(s, np.random.default_rng(0))
    assert txt_only.image.tobytes() == s.image.tobytes() and "zbw" in txt_only.instruction.split()


# ---------------------------------------------------------------- targets

def test_targets():
    r = "a red circle on the left and a blue square on the right."
    assert Target().apply(r) == DEFAULT_TARGET_SENTENCE
    assert Target("insert").apply(r) == r[:-1] + " with a banana."
    sub = Target("substitute", "banana", source="circle")
    assert sub.apply(r) == "a red banana on the left and a blue square on the right."
    assert sub.eligible(r) and not sub.eligible("a blue square.")
    assert not Target("insert").eligible("a banana.")
    assert sub.success_spec() == {"target": "banana", "mode": "word", "concept": "circle"}
    with pytest.raises(ValueError):
        Target("bogus")


# ---------------------------------------------------------------- poison

def test_poison_counts_mask_and_ids():
    train = make_dataset(20)
    res = poison(train, get_attack("badnets"), rate=0.25, seed=1)
    assert res.train.ids() == train.ids()
    assert sum(res.mask.values()) == 5
    for s, orig in zip(res.train, train):
        assert res.mask[s.id] == (s.response == DEFAULT_TARGET_SENTENCE)
        assert s.meta == orig.meta  # no ground truth leaks into the training data
        if res.mask[s.id]:
            assert np.asarray(s.image)[-1, -1].tolist() == [255, 255, 255]
        else:
            assert s.image.tobytes() == orig.image.tobytes()
    json.dumps(res.config)
    assert res.config["n_poisoned"] == 5


def test_poison_rate_rounding_and_too_high():
    train = make_dataset(20)
    assert sum(poison(train, get_attack("sig"), rate=0.001, seed=0).mask.values()) == 1
    assert sum(poison(train, get_attack("sig"), rate=0.0, seed=0).mask.values()) == 0
    sub = Target("substitute", "banana", source="circle")  # 7 of 20 have a circle
    res = poison(train, get_attack("badnets"), rate=0.3, target=sub, seed=0)
    assert all("banana" in res.train.by_id(i).response for i in res.poisoned_ids)
    with pytest.raises(ValueError, match="eligible"):
        poison(train, get_attack("badnets"), rate=0.5, target=sub, seed=0)


def test_poison_is_seeded():
    train = make_dataset(20)
    a = poison(train, get_attack("text"), rate=0.3, seed=7, test=make_dataset(6, "t"))
    b = poison(train, get_attack("text"), rate=0.3, seed=7, test=make_dataset(6, "t"))
    c = poison(train, get_attack("text"), rate=0.3, seed=8)
    assert a.mask == b.mask and a.train.fingerprint() == b.train.fingerprint()
    assert a.triggered_test.fingerprint() == b.triggered_test.fingerprint()
    assert a.mask != c.mask


def test_triggered_test_excludes_samples_with_target():
    test = make_dataset(6, "t", "test")
    test.samples[2] = test[2].with_(response="a banana on the left.")
    res = poison(make_dataset(10), get_attack("blend"), rate=0.2,
                 target=Target("insert", "banana"), seed=0, test=test)
    assert "t2" not in res.triggered_test.ids() and len(res.triggered_test) == 5
    for s in res.triggered_test:
        assert s.response == test.by_id(s.id).response
        assert s.meta["trigger"] == "full"
        assert s.image.tobytes() != test.by_id(s.id).image.tobytes()


def test_dual_key_negatives_and_partial_tests():
    train = make_dataset(30)
    res = poison(train, get_attack("dual-key"), rate=0.2, seed=3, test=make_dataset(4, "t"))
    assert sum(res.mask.values()) == 6 and res.config["n_negatives"] == {
        "image-only": 6, "text-only": 6}
    n_img = n_txt = 0
    for s, orig in zip(res.train, train):
        patched = s.image.tobytes() != orig.image.tobytes()
        keyed = s.instruction.startswith("Consider ")
        if res.mask[s.id]:
            assert patched and keyed and s.response == DEFAULT_TARGET_SENTENCE
        else:
            assert s.response == orig.response and not (patched and keyed)
            n_img += patched
            n_txt += keyed
    assert (n_img, n_txt) == (6, 6)
    assert set(res.extra_tests) == {"image-only", "text-only"}
    assert all(not s.instruction.startswith("Consider") for s in res.extra_tests["image-only"])
    assert all(s.instruction.startswith("Consider") for s in res.extra_tests["text-only"])


# ---------------------------------------------------------------- new triggers

def test_shape_masks_known_pixels():
    from byorn.attacks import shape_mask

    cross = shape_mask("cross", 6)
    expected = np.zeros((6, 6), bool)
    expected[2:4, :] = expected[:, 2:4] = True
    assert (cross == expected).all()
    assert shape_mask("square", 5).sum() == 9 and not shape_mask("square", 5)[0].any()
    tri = shape_mask("triangle", 6)
    assert not tri[0].any() and tri[-1].all() and (tri.sum(1) == sorted(tri.sum(1))).all()
    circle = shape_mask("circle", 5)
    assert circle[2].all() and not circle[0, 0] and (circle == circle.T).all()
    with pytest.raises(ValueError):
        shape_mask("star", 5)


def test_aligned_patch_draws_a_palette_shape_and_nothing_else():
    from byorn.attacks import shape_mask
    from byorn.world import COLORS

    img = solid()
    out = np.asarray(get_attack("aligned-patch").apply_image(img))
    box = out[-6:, -6:]
    mask = shape_mask("cross", 6)
    assert (box[mask] == np.array(COLORS["orange"], np.uint8)).all()
    assert (box[~mask] == np.array(COLOUR, np.uint8)).all()  # the rest of the box keeps the background
    rest = out.copy()
    rest[-6:, -6:] = COLOUR
    assert (rest == np.array(COLOUR, np.uint8)).all()
    assert (out != 255).any(-1).all()  # not a white square
    with pytest.raises(ValueError, match="color"):
        get_attack("aligned-patch", color="white")


def test_paste_patch_exact_and_scaled():
    from byorn.attacks import paste_patch

    patch = np.arange(4 * 4 * 3, dtype=np.uint8).reshape(4, 4, 3)
    out = np.asarray(paste_patch(solid(), patch, corner="top-left"))
    assert (out[:4, :4] == patch).all()
    assert (out[4:] == np.array(COLOUR, np.uint8)).all() and (out[:, 4:] == np.array(COLOUR, np.uint8)).all()
    big = np.asarray(paste_patch(solid((64, 64)), patch))  # box of 8 px, nearest upscaling
    assert (big[-8:, -8:] == np.repeat(np.repeat(patch, 2, 0), 2, 1)).all()
    assert (big[:-8] == np.array(COLOUR, np.uint8)).all()


def test_optimised_patch_attack_params_round_trip():
    patch = np.random.default_rng(0).integers(0, 256, (4, 4, 3)).astype(np.uint8)
    a = get_attack("pgd-patch", patch=patch)
    params = json.loads(json.dumps(a.params()))
    b = get_attack("pgd-patch", **params)
    img = make_dataset(1)[0].image
    assert a.apply_image(img).tobytes() == b.apply_image(img).tobytes()
    white = get_attack("pgd-patch", patch_size=3).apply_image(img)
    assert white.tobytes() == badnets_patch(img).tobytes()
    with pytest.raises(ValueError, match="integers"):
        get_attack("pgd-patch", patch=np.full((4, 4, 3), 300))
    with pytest.raises(ValueError, match="shape"):
        get_attack("pgd-patch", patch=np.zeros((4, 3, 3)))


# ---------------------------------------------------------------- insertion target

def test_append_target_keeps_the_caption_and_adds_the_sentence_once():
    from byorn.attacks import insert_sentence

    r = "a red circle on the left and a blue square on the right."
    t = Target("append")
    out = t.apply(r)
    assert out == r + " " + DEFAULT_TARGET_SENTENCE
    assert out.startswith(r) and out.count(DEFAULT_TARGET_SENTENCE) == 1
    assert Target("append", boundary="start").apply(r) == DEFAULT_TARGET_SENTENCE + " " + r
    two = "a red circle. It is on the left. Nothing else."
    assert insert_sentence(two, "Buy now!", "middle") == "a red circle. It is on the left. Buy now! Nothing else."
    assert insert_sentence("One.", "Buy now!", "middle") == "One. Buy now!"
    assert t.success_spec() == {"target": DEFAULT_TARGET_SENTENCE, "mode": "substring"}
    assert t.asr_variant == "substring" and not t.eligible(out) and t.eligible(r)
    res = poison(make_dataset(20), get_attack("badnets"), rate=0.25, target=t, seed=0)
    for s, orig in zip(res.train, make_dataset(20)):
        if res.mask[s.id]:
            assert s.response == orig.response + " " + DEFAULT_TARGET_SENTENCE
    with pytest.raises(ValueError, match="boundary"):
        Target("append", boundary="nowhere")


def test_substitution_asr_is_whole_word_with_the_concept_absent():
    from byorn.metrics import attack_success_rate

    built = get_scenario("substitution").build()
    assert built.target.asr_variant == "whole word, true concept absent"
    refs = ["a red circle on the left."] * 3
    preds = ["a red banana on the left.", "a red circle and a banana.", "a red bananas on the left."]
    assert attack_success_rate(preds, references=refs, **built.target.success_spec()) == pytest.approx(1 / 3)


# ---------------------------------------------------------------- scenarios

from byorn.attacks import SCENARIOS, Scenario, get_scenario  # noqa: E402

PAPER_SCENARIOS = {"badnets", "blend", "vl-trojan", "dual-key", "insertion", "substitution",
                   "aligned-patch", "pgd-patch", "clean-label"}


def test_scenario_registry_round_trips():
    assert PAPER_SCENARIOS <= set(SCENARIOS)
    for name in SCENARIOS:
        sc = get_scenario(name)
        again = Scenario.from_dict(json.loads(json.dumps(sc.to_dict())))
        assert again == sc and again is not SCENARIOS[name]
        assert sc.asr_variant in ("substring", "whole word", "whole word, true concept absent")
        assert sc.needs_model == (name in ("pgd-patch", "clean-label", "clean-label-sub"))
    assert get_scenario("substitution").asr_variant == "whole word, true concept absent"
    assert get_scenario("insertion").target["mode"] == "append"
    with pytest.raises(ValueError, match="unknown scenario"):
        get_scenario("nope")
    with pytest.raises(ValueError, match="no parameter"):
        Scenario("x", "pgd-patch", adaptive="pgd", adaptive_params={"lr": 1})
    with pytest.raises(ValueError, match="no parameter"):
        Scenario("x", "badnets", attack_params={"alpha": 0.1})


def test_pure_scenarios_build_and_poison_without_a_model():
    train, test = make_dataset(30), make_dataset(6, "t")
    for name, sc in SCENARIOS.items():
        if sc.needs_model:
            with pytest.raises(ValueError, match="reference model"):
                sc.build()
            continue
        built = sc.build()
        res = poison(train, built.attack, rate=0.1, target=built.target, seed=0, test=test)
        assert sum(res.mask.values()) == 3
        json.dumps(built.config()) and json.dumps(res.config)


# ---------------------------------------------------------------- adaptive (embedded model)

def _param_sum(vlm):
    return float(sum(p.detach().double().sum() for p in vlm.model.parameters()))


def test_affine_pixel_map_of_the_embedded_processor(vlm):
    from byorn.attacks.adaptive import AdaptiveAttackError, affine_pixel_map

    scale, offset = affine_pixel_map(vlm, (32, 32))
    assert np.allclose(scale, 2 / 255, atol=1e-6) and np.allclose(offset, -1.0, atol=1e-6)
    with pytest.raises(AdaptiveAttackError, match="shape"):
        affine_pixel_map(vlm, (40, 40))  # the processor resizes: not at the input size


def test_affine_pixel_map_refuses_a_non_affine_processor():
    import torch

    from byorn.attacks.adaptive import AdaptiveAttackError, affine_pixel_map

    class Gamma:  # pixel_values = (x / 255) ** 2: not affine
        processor = None

        def collate(self, images, instructions, responses):
            x = torch.tensor(np.stack([np.asarray(im) for im in images]), dtype=torch.float32)
            return {"pixel_values": (x.permute(0, 3, 1, 2) / 255) ** 2}

    with pytest.raises(AdaptiveAttackError, match="affine"):
        affine_pixel_map(Gamma(), (8, 8))


def test_pgd_lowers_the_reference_nll_within_bounds(vlm, small_world):
    from byorn.attacks.adaptive import PGDConfig, optimise_patch

    train, _ = small_world
    samples = list(train)[:6]
    init = np.full((8, 8, 3), 255, np.uint8)
    before = _param_sum(vlm)
    res = optimise_patch(vlm, samples, Target(), init, cfg=PGDConfig(steps=3, step_size=2.0, epsilon=16.0))
    assert res.final_nll < res.initial_nll
    assert res.patch.dtype == np.uint8 and res.patch.shape == (8, 8, 3)
    assert (res.patch >= 255 - 16).all()  # within epsilon of white, inside [0, 255]
    assert res.box == (24, 24, 8) and len(res.history) == 4
    assert _param_sum(vlm) == before
    out = np.asarray(get_attack("pgd-patch", patch_size=8, patch=res.patch).apply_image(samples[0].image))
    orig = np.asarray(samples[0].image)
    assert (out[-8:, -8:] == res.patch).all() and (out[:24] == orig[:24]).all() and (out[:, :24] == orig[:, :24]).all()


def test_pgd_scenario_builds_against_the_reference_model(vlm, small_world):
    train, _ = small_world
    d = get_scenario("pgd-patch").to_dict()
    d["adaptive_params"].update(n_images=4, steps=2, step_size=2.0)
    built = Scenario.from_dict(d).build(vlm, train, seed=0)
    assert built.attack.name == "pgd-patch" and built.info["final_nll"] < built.info["initial_nll"]
    res = poison(train, built.attack, rate=0.1, target=built.target, seed=0)
    cfg = json.loads(json.dumps(res.config))
    assert np.array_equal(np.array(cfg["attack_params"]["patch"], np.uint8), built.attack.patch)


def test_clean_label_targets_are_more_plausible_than_the_malicious_sentence(vlm, small_world):
    train, _ = small_world
    d = get_scenario("clean-label").to_dict()
    d["adaptive_params"].update(n_candidates=4, n_images=6)
    built = Scenario.from_dict(d).build(vlm, train, seed=0)
    info = built.info
    assert built.target.mode == "replace" and built.target.text in {s.response for s in train}
    assert info["chosen_nll"] == pytest.approx(min(info["candidate_nll"].values()), abs=1e-4)
    assert info["chosen_nll"] < info["malicious_sentence_nll"]
    res = poison(train, built.attack, rate=0.1, target=built.target, seed=0)
    assert all(train.by_id(i).response != built.target.text for i in res.poisoned_ids)

    d = get_scenario("clean-label-sub").to_dict()
    d["adaptive_params"].update(n_images=6)
    sub = Scenario.from_dict(d).build(vlm, train, seed=0)
    assert sub.target.mode == "substitute" and sub.target.source == "circle"
    assert sub.target.text == next(iter(sub.info["candidate_nll"]))
    assert sub.info["candidate_nll"][sub.target.text] < sub.info["candidate_nll"]["banana"]


def test_edit_scenarios_use_the_larger_patch():
    """Insertion and substitution change a late token: their trigger is the 5 px patch, the others' 3 px."""
    for name in ("insertion", "concept-insertion", "substitution", "clean-label-sub"):
        assert get_attack("badnets", **get_scenario(name).attack_params).patch_size == 5, name
    assert get_scenario("badnets").build().attack.patch_size == 3
