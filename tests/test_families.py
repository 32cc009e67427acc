"""Every supported VLM family, proven on a tiny checkpoint of its real classes (byorn.models.zoo).

The zoo is built once per session; each test runs for every family and the
embedded tiny LLaVA.  Known answers: scores equal the model's own loss,
batches equal single samples, logits before a changed token stay equal,
parameters move when trained.
"""
from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from byorn.data import Conversation
from byorn.data.sample import Turn
from byorn.models import IGNORE, VLM, ModelError, SequenceTooLong, zoo
from byorn.models.families import family_of, lora_target_modules
from byorn.models.loading import has_torchvision

FAMILIES = list(zoo.NAMES)
ALL = FAMILIES + ["embedded"]
ROOT = Path(__file__).resolve().parent.parent

# The token each family's template ends an assistant turn with (the embedded model's writes </s>).
STOP = {"llava": "</s>", "llava_next": "</s>", "qwen2_vl": "<|im_end|>", "qwen2_5_vl": "<|im_end|>",
        "qwen3_vl": "<|im_end|>", "internvl": "<|im_end|>", "idefics3": "<end_of_utterance>",
        "smolvlm": "<end_of_utterance>", "paligemma": "<eos>", "gemma3": "<end_of_turn>", "embedded": "</s>"}
STOP.update({"aya_vision": "<|END_OF_TURN_TOKEN|>", "mistral3": "</s>", "llama4": "<|eot|>", "lfm2_vl": "<|im_end|>"})
# Processors that need torchvision (transformers 5.23): their tests run wherever torchvision imports.
NO_TORCHVISION = ("needs torchvision, which does not import here (the CPU torch has no matching build); "
                  "run these tests in an environment with torch + torchvision")
# GLM-4.1V / 4.6V write no end-of-turn token: the next turn's <|user|>, which their generation config stops on
STOP.update({"gemma4": "<turn|>", "qwen3_5": "<|im_end|>", "llava_onevision": "<|im_end|>", "glm4v": "<|user|>",
             "glm46v": "<|user|>", "glm4v_moe": "<|user|>"})
# LLaVA-OneVision encodes one image with any-res tiles and each of several images at base resolution only
# (the model's own rule, batch_num_images), so a turn's scores change when a later turn adds an image
IMAGE_COUNT_CHANGES_ENCODING = {"llava_onevision"}


@pytest.fixture(scope="session")
def models(zoo_dir):
    """family -> VLM, each loaded once (tests that train work on a copy)."""
    cache: dict[str, VLM] = {}

    def get(fam: str) -> VLM:
        if fam in zoo.NEEDS_TORCHVISION and not has_torchvision():
            pytest.skip(f"{fam} {NO_TORCHVISION}")
        if fam not in cache:
            if fam == "embedded":
                cache[fam] = VLM.load(device="cpu")
            else:
                if not (zoo_dir / fam / "config.json").exists():
                    zoo.build(fam, zoo_dir / fam)
                cache[fam] = VLM.load(zoo_dir / fam, device="cpu")
        return cache[fam]
    return get


def _image(seed: int, h: int = 32, w: int = 32) -> Image.Image:
    return Image.fromarray((np.random.RandomState(seed).rand(h, w, 3) * 255).astype("uint8"))


def _single(i: int, prompt: str = "What is this?", answer: str = "a red circle.") -> Conversation:
    return Conversation.single(_image(i, 32 + 8 * (i % 3)), prompt, answer)


def _two_turns(second_image: bool = False) -> Conversation:
    turns = [Turn("user", "<image>What is it?"), Turn("assistant", "A red cat."),
             Turn("user", ("And <image> this?" if second_image else "Are you sure?")), Turn("assistant", "Yes, sure.")]
    return Conversation(turns, [_image(1)] + ([_image(2, 40)] if second_image else []))


def _text_only() -> Conversation:
    return Conversation([Turn("user", "Tell me a color."), Turn("assistant", "Blue.")], [])


def _two_images() -> Conversation:
    return Conversation([Turn("user", "<image>Compare <image> these."), Turn("assistant", "They differ.")],
                        [_image(3), _image(4, 40)])


def _loss(vlm: VLM, inputs: dict) -> float:
    with torch.no_grad():
        return vlm.model(**inputs).loss.item()


def _mean(turns) -> float:
    return float(np.mean([s for t in turns for s in t.surprisals]))


def _supports(fam: str, what: str) -> bool:
    return fam == "embedded" or getattr(family_of(fam), what)


# ------------------------------------------------------------------ the zoo

@pytest.mark.parametrize("fam", FAMILIES)
def test_zoo_checkpoints_are_architecture_faithful(models, fam):
    vlm = models(fam)
    assert vlm.family == fam and family_of(fam).verified
    assert sum(p.numel() for p in vlm.model.parameters()) < 1_000_000
    tok = vlm.tokenizer
    assert vlm.image_token_ids and all(tok.convert_ids_to_tokens(i) != tok.unk_token for i in vlm.image_token_ids)
    assert vlm.model.config.get_text_config().vocab_size >= len(tok)
    assert vlm.renderer.stop == STOP[fam]
    wide = Conversation.single(_image(0, 32, 64), "What is this?", "a cat.")
    inputs = vlm.encode([wide]).inputs
    n_image_tokens = int(vlm.image_token_mask(inputs["input_ids"]).sum())
    if fam == "llava_next":  # any-res: the wide image is two 32 px tiles plus the overview
        assert inputs["pixel_values"].shape[1] == 3 and inputs["image_sizes"].tolist() == [[32, 64]]
    if fam in ("idefics3", "smolvlm"):  # image splitting: tiles plus the global view
        assert inputs["pixel_values"].shape[1] > 2 and n_image_tokens == 4 * inputs["pixel_values"].shape[1]
    if fam == "internvl":  # dynamic tiling: two crops plus the thumbnail
        assert inputs["pixel_values"].shape[0] == 3
    if fam.startswith("qwen"):  # dynamic resolution: the token count follows the image's size
        assert int(inputs["image_grid_thw"].prod()) // 4 == n_image_tokens


@pytest.mark.parametrize("fam", ["aya_vision", "mistral3", "llama4", "lfm2_vl"])
def test_image_layouts_of_the_newer_families(models, fam):
    """A wide 32 x 64 image takes the family's own layout: Aya Vision and Llama 4 cut two 32 px tiles plus a
    global view (4 tokens each); Pixtral keeps the size (8 px patches merged 2 x 2, one break per row); LFM2-VL
    keeps it as a 4 x 8 grid of 8 px patches, unshuffled 2 x 2."""
    vlm = models(fam)
    inputs = vlm.encode([Conversation.single(_image(0, 32, 64), "What is this?", "a cat.")]).inputs
    n_image_tokens = int(vlm.image_token_mask(inputs["input_ids"]).sum())
    tokens = vlm.tokenizer.convert_ids_to_tokens(inputs["input_ids"][0].tolist())
    if fam in ("aya_vision", "llama4"):
        assert tuple(inputs["pixel_values"].shape[:2]) == (3, 3) and n_image_tokens == 3 * 4
    if fam == "aya_vision":
        assert tokens.count("TILE") == 2 and tokens.count("TILE_GLOBAL") == 1
    if fam == "llama4":
        assert tokens.count("<|tile_x_separator|>") == 1 and tokens.count("<|image|>") == 1
        assert inputs["pixel_values"].dtype == next(vlm.model.parameters()).dtype  # bf16 from the processor
    if fam == "mistral3":
        assert inputs["image_sizes"].tolist() == [[32, 64]] and n_image_tokens + tokens.count("[IMG_BREAK]") + 1 == 10
    if fam == "lfm2_vl":
        assert inputs["spatial_shapes"].tolist() == [[4, 8]] and n_image_tokens == 8


# ------------------------------------------------------------------ masks

@pytest.mark.parametrize("fam", ALL)
def test_labels_cover_assistant_tokens_only(models, fam):
    vlm = models(fam)
    convs = [_single(0), _single(1, "Describe the picture in detail, please.", "two blue squares.")]
    if _supports(fam, "multi_turn"):
        convs.append(_two_turns())
    batch = vlm.encode(convs)
    ids, labels, attn = batch.inputs["input_ids"], batch.inputs["labels"], batch.inputs["attention_mask"]
    stop = vlm.tokenizer.convert_tokens_to_ids(STOP[fam])
    image = vlm.image_token_mask(ids)
    assert image.any()
    for i, conv in enumerate(convs):
        lab = labels[i] != IGNORE
        assert torch.equal(lab, batch.turn_ids[i] >= 0)  # every turn trained, nothing else
        assert not (lab & image[i]).any() and not (lab & (attn[i] == 0)).any()
        assert torch.equal(ids[i][lab], labels[i][lab])
        answers = [t.text for t in conv.turns if t.role == "assistant"]
        for k, answer in enumerate(answers):
            turn = ids[i][batch.turn_ids[i] == k].tolist()
            assert turn[-1] == stop and stop not in turn[:-1]  # ends with the family's stop token
            assert vlm.tokenizer.decode(turn[:-1]).strip() == answer
        last = int(lab.nonzero().max())
        assert last == batch.lengths[i] - 1 or labels[i, last + 1] == IGNORE  # no stray token after the stop
        assert attn[i].tolist() == sorted(attn[i].tolist(), reverse=True)  # right padding
    assert batch.n_turns == [sum(t.role == "assistant" for t in c.turns) for c in convs]


@pytest.mark.parametrize("fam", ALL)
def test_prompt_holds_one_bos(models, fam):
    vlm = models(fam)
    batch = vlm.encode([_single(0), _single(1, "A longer question about the image?")])
    bos = vlm.tokenizer.bos_token_id
    for i, n in enumerate(batch.lengths):
        ids = batch.inputs["input_ids"][i, :n].tolist()
        if bos is not None and fam not in ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "internvl", "smolvlm"):
            assert ids.count(bos) == 1, vlm.tokenizer.convert_ids_to_tokens(ids[:4])
        else:  # no BOS in these families' templates or tokenizers (SmolVLM's bos is <|im_start|>)
            assert ids.count(bos) <= 1 if bos is not None else True


@pytest.mark.parametrize("fam", ["qwen2_vl", "qwen2_5_vl", "qwen3_vl"])
def test_qwen_batches_carry_mm_token_type_ids(models, fam):
    vlm = models(fam)
    inputs = vlm.encode([_single(0)]).inputs
    assert torch.equal(inputs["mm_token_type_ids"] == 1, vlm.image_token_mask(inputs["input_ids"]))


def test_token_type_ids_follow_each_family(models):
    gemma = models("gemma3").encode([_single(0)])
    types = gemma.inputs["token_type_ids"][0]
    assert torch.equal(types == 1, models("gemma3").image_token_mask(gemma.inputs["input_ids"])[0])
    assert (types[gemma.turn_ids[0] >= 0] == 0).all()  # Gemma 3: the answer is causal text, never "image"
    pali = models("paligemma").encode([_single(0)])
    assert torch.equal(pali.inputs["token_type_ids"][0] == 1, pali.turn_ids[0] >= 0)  # PaliGemma: 1 = suffix
    assert "token_type_ids" not in models("llava").encode([_single(0)]).inputs


def test_paligemma_sequence_matches_its_processor(models):
    vlm = models("paligemma")
    conv = _single(0)
    ours = vlm.encode([conv]).inputs
    theirs = vlm.processor(text="<image>What is this?", images=[conv.images[0]], suffix="a red circle.",
                           return_tensors="pt")
    assert ours["input_ids"].tolist() == theirs["input_ids"].tolist()
    assert ours["token_type_ids"].tolist() == theirs["token_type_ids"].tolist()
    assert torch.allclose(ours["pixel_values"], theirs["pixel_values"])


# ----------------------------------------------------------------- scoring

@pytest.mark.parametrize("fam", ALL)
def test_scores_equal_the_models_own_loss(models, fam):
    vlm = models(fam)
    convs = [_single(0), _two_turns()] if _supports(fam, "multi_turn") else [_single(0), _single(2)]
    for conv in convs:
        batch = vlm.encode([conv])
        (turns,) = vlm.score_batch(batch)
        assert len(turns) == batch.n_turns[0]
        assert _mean(turns) == pytest.approx(_loss(vlm, batch.inputs), rel=1e-5)
        assert all(len(t.tokens) == len(t.surprisals) > 0 for t in turns)
    single = vlm.score([_image(0)], ["What is this?"], ["a red circle."])[0]
    assert "".join(single.tokens).strip().startswith("a red circle.")


@pytest.mark.parametrize("fam", ALL)
def test_batch_of_short_and_long_prompts_equals_each_alone(models, fam):
    vlm = models(fam)
    convs = [_single(0), _single(1, "Please describe everything you can see in this picture, in detail.",
                                  "a small green triangle on the right."), _single(2, "Hm?", "no.")]
    together = vlm.score_conversations(convs, batch_size=3)
    for conv, got in zip(convs, together):
        alone = vlm.score_conversations([conv])[0]
        assert [t.tokens for t in got] == [t.tokens for t in alone]
        assert [s for t in got for s in t.surprisals] == pytest.approx([s for t in alone for s in t.surprisals],
                                                                       abs=1e-4)
    by_tokens = vlm.score_conversations(convs, batch_size=3, max_batch_tokens=1)  # one per batch, input order
    assert [_mean(t) for t in by_tokens] == pytest.approx([_mean(t) for t in together], abs=1e-4)


@pytest.mark.parametrize("fam", ALL)
def test_logits_never_depend_on_later_tokens(models, fam):
    vlm = models(fam)
    batch = vlm.encode([_single(1, "What is this?", "two blue squares on the left.")])
    inputs = batch.inputs
    turn = (batch.turn_ids[0] == 0).nonzero().squeeze(-1)
    last = int(turn[-2])  # the last answer token before the stop token
    changed = dict(inputs, input_ids=inputs["input_ids"].clone())
    changed["input_ids"][0, last] = (int(inputs["input_ids"][0, last]) + 7) % vlm.model.config.get_text_config().vocab_size
    with torch.no_grad():
        a = vlm.model(**inputs).logits[0, :last]
        b = vlm.model(**changed).logits[0, :last]
    assert torch.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("fam", ALL)
def test_embeddings_have_one_row_per_turn(models, fam):
    vlm = models(fam)
    convs = [_single(0), _two_turns()] if _supports(fam, "multi_turn") else [_single(0), _single(1)]
    scores, emb = vlm.score_conversations(convs, embed=True)
    rows = sum(len(s) for s in scores)
    hidden = vlm.model.config.get_text_config().hidden_size
    assert emb["response"].shape == emb["image"].shape == (rows, hidden)
    assert emb["response"].dtype == np.float32 and np.abs(emb["image"]).sum() > 0


# --------------------------------------------------------------- multi-turn

@pytest.mark.parametrize("fam", [f for f in ALL if _supports(f, "multi_turn")])
def test_each_turn_scores_as_if_alone_given_its_prefix(models, fam):
    vlm = models(fam)
    conv = _two_turns(second_image=fam not in IMAGE_COUNT_CHANGES_ENCODING)
    (turns,) = vlm.score_conversations([conv])
    first_only = Conversation(conv.turns[:2], conv.images[:1])
    (alone,) = vlm.score_conversations([first_only])
    assert turns[0].surprisals == pytest.approx(alone[0].surprisals, abs=1e-4)
    conv = _two_turns(second_image=True)
    (turns,) = vlm.score_conversations([conv])
    for k in (0, 1):
        inputs = vlm.encode([conv], train_turns=[{k}]).inputs
        assert turns[k].mean == pytest.approx(_loss(vlm, inputs), rel=1e-5)


@pytest.mark.parametrize("fam", [f for f in ALL if _supports(f, "multi_turn")])
def test_generation_continues_a_conversation(models, fam):
    vlm = models(fam)
    conv = _two_turns()
    prompt = Conversation(conv.turns[:3], conv.images)
    (answer,) = vlm.generate_conversations([prompt], max_new_tokens=6)
    assert isinstance(answer, str)
    rendered = vlm.renderer.render(prompt, generation=True).text
    assert rendered.startswith(vlm.renderer.render(Conversation(conv.turns[:2], conv.images)).text)


def test_a_template_that_rewrites_earlier_turns_is_refused(models):
    from types import SimpleNamespace

    from byorn.models.render import Renderer

    rewrites = ("{% for m in messages %}{% if loop.last %}[LAST]{% endif %}{{ m['role'] }}: "
                "{{ m['content'][0]['text'] }}</s>{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}")
    renderer = Renderer(SimpleNamespace(chat_template=rewrites), models("llava").tokenizer, family_of("llava"))
    with pytest.raises(ModelError, match=r"assistant turn 0 faithfully: the chat template opens it differently "
                                         r"from its generation prompt.*\[LAST\]"):
        renderer.render(_text_only())


def test_paligemma_refuses_what_it_cannot_take(models):
    vlm = models("paligemma")
    with pytest.raises(ModelError, match="conversation 1: PaliGemma is a single-exchange model.*2 exchanges"):
        vlm.encode([_single(0), _two_turns()])
    with pytest.raises(ModelError, match="always takes an image.*text-only"):
        vlm.encode([_text_only()])


@pytest.mark.parametrize("fam", ALL)
def test_text_only_and_two_image_conversations(models, fam):
    vlm = models(fam)
    convs = ([_text_only()] if _supports(fam, "text_only") else []) + [_two_images(), _single(0)]
    mixed = vlm.score_conversations(convs, batch_size=3)
    for conv, got in zip(convs, mixed):
        batch = vlm.encode([conv])
        assert _mean(got) == pytest.approx(_loss(vlm, batch.inputs), rel=1e-5)
        n_image_tokens = int(vlm.image_token_mask(batch.inputs["input_ids"]).sum())
        assert (n_image_tokens > 0) == bool(conv.images)
    answers = vlm.generate_conversations([Conversation(c.turns[:-1], c.images) for c in convs], max_new_tokens=4)
    assert len(answers) == len(convs)


# ---------------------------------------------------------------- generation

@pytest.mark.parametrize("fam", ALL)
def test_batched_greedy_generation_equals_one_at_a_time(models, fam):
    vlm = models(fam)
    images = [_image(1, 40), _image(2)]
    prompts = ["Color?", "Describe the picture in a few words, please."]  # short and long: left padding
    side = vlm.tokenizer.padding_side
    batched = vlm.generate(images, prompts, max_new_tokens=6)
    single = [vlm.generate([im], [q], max_new_tokens=6)[0] for im, q in zip(images, prompts)]
    assert batched == single and any(batched)
    assert vlm.tokenizer.padding_side == side  # padding_side is passed per call, the shared tokenizer untouched
    sampled = vlm.generate(images, prompts, max_new_tokens=6, temperature=1.0, seed=3)
    assert sampled == vlm.generate(images, prompts, max_new_tokens=6, temperature=1.0, seed=3)


# ------------------------------------------------------------------ training

def _train_two_steps(model, inputs, params) -> None:
    opt = torch.optim.AdamW(params, lr=1e-2)
    model.train()
    for _ in range(2):
        loss = model(**inputs).loss
        loss.backward()
        opt.step()
        opt.zero_grad()


@pytest.mark.parametrize("fam", ALL)
def test_two_training_steps_move_the_weights_full_and_lora(models, fam):
    from peft import LoraConfig, get_peft_model

    vlm = models(fam)
    inputs = vlm.encode([_single(0), _single(1, "Describe it.", "a green cross.")]).inputs
    full = copy.deepcopy(vlm.model)
    before = {n: p.detach().clone() for n, p in full.named_parameters()}
    _train_two_steps(full, inputs, list(full.parameters()))
    lm_head = full.get_output_embeddings().weight
    assert not torch.equal(lm_head, before[next(n for n, p in full.named_parameters() if p is lm_head)])

    targets = lora_target_modules(vlm.model)
    assert targets and not any("vision" in t for t in targets)
    lora = get_peft_model(copy.deepcopy(vlm.model), LoraConfig(r=4, lora_alpha=8, target_modules=targets))
    trained = [(n, p) for n, p in lora.named_parameters() if p.requires_grad]
    assert trained and all("lora_" in n for n, _ in trained)
    start = {n: p.detach().clone() for n, p in trained}
    _train_two_steps(lora, inputs, [p for _, p in trained])
    assert any(not torch.equal(p, start[n]) for n, p in trained if "lora_B" in n)


# Where decoder layers keep their attention (or what stands in its place: Qwen3.5's linear attention,
# LFM2's short convolutions) and their MLP; MoE routers are not LoRA targets.
_ATTENTION_PARTS = ("self_attn", "linear_attn", "conv", "attention", "self_attention")
_MLP_PARTS = ("mlp", "feed_forward", "ffn")
_ROUTERS = ("router", "gate", "shared_expert_gate")


@pytest.mark.parametrize("fam", ALL)
def test_default_lora_targets_cover_attention_and_mlp_of_every_layer(models, fam):
    """The default LoRA targets (what ``--lora`` wraps) put adapters on every projection of every decoder
    layer's attention and MLP, fused and linear-attention ones included, and nothing in the vision tower."""
    from byorn.models.families import language_model
    from byorn.train.setup import lora_target_modules as default_targets

    model = models(fam).model
    targets = set(default_targets(model, None))
    names = {id(m): n for n, m in model.named_modules()}
    lm = language_model(model)
    assert all(t.startswith(names[id(lm)] + ".") for t in targets)
    layers = next(m for n, m in lm.named_modules() if n.rsplit(".", 1)[-1] == "layers"
                  and isinstance(m, torch.nn.ModuleList))
    for i, layer in enumerate(layers):
        covered = {"attention": 0, "mlp": 0}
        for child_name, child in layer.named_children():
            kind = "attention" if child_name in _ATTENTION_PARTS else "mlp" if child_name in _MLP_PARTS else None
            if kind is None:
                continue
            linears = [names[id(m)] for n, m in child.named_modules() if isinstance(m, torch.nn.Linear)
                       and n.rsplit(".", 1)[-1] not in _ROUTERS]
            missing = [n for n in linears if n not in targets]
            assert not missing, f"layer {i}: no LoRA on {missing}"
            covered[kind] += len(linears)
        assert covered["attention"] and covered["mlp"], f"layer {i} of {fam}: {covered}"


# --------------------------------------------------------------- save / load

@pytest.mark.parametrize("fam", ALL)
def test_save_and_load_round_trip(models, fam, tmp_path):
    vlm = models(fam)
    again = VLM.load(vlm.save(tmp_path / "m"), device="cpu")
    assert type(again.processor).__name__ == type(vlm.processor).__name__ and again.family == vlm.family
    convs = [_single(0), _single(1)]
    assert [_mean(t) for t in again.score_conversations(convs)] == \
        pytest.approx([_mean(t) for t in vlm.score_conversations(convs)], abs=1e-6)
    if fam in ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "internvl", "smolvlm", "gemma4", "qwen3_5", "llava_onevision",
               "glm4v", "glm46v", "glm4v_moe"):  # the video settings survive
        assert "video_processor" in json.loads((tmp_path / "m" / "processor_config.json").read_text())


@pytest.mark.parametrize("fam", ALL)
def test_over_long_conversations_raise(models, fam):
    vlm = models(fam)
    with pytest.raises(SequenceTooLong) as e:
        vlm.encode([_single(0), _single(1)], max_length=12)
    assert e.value.index == 0 and e.value.limit == 12 and e.value.length > 12
    long = _single(2, "What is this? " * 200, "a red circle.")
    with pytest.raises(SequenceTooLong, match="conversation 1") as e:
        vlm.encode([_single(0), long])
    assert e.value.limit == vlm.max_length


# ------------------------------------------------------------------ loading

def test_loading_refuses_bad_folders(zoo_dir, models, tmp_path):
    models("llava")
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"]}))
    (bert / "model.safetensors").write_bytes(b"x")
    with pytest.raises(ModelError, match="not an image-text-to-text"):
        VLM.load(bert)
    no_template = tmp_path / "no_template"
    shutil.copytree(zoo_dir / "llava", no_template)
    (no_template / "chat_template.jinja").unlink()
    with pytest.raises(ModelError, match="no chat template.*LLaVA-1.5"):
        VLM.load(no_template)


@pytest.mark.parametrize("fam", FAMILIES)
def test_bf16_and_eager_attention_pass_through(models, zoo_dir, fam):
    models(fam)
    vlm = VLM.load(zoo_dir / fam, device="cpu", dtype=torch.bfloat16, attn_implementation="eager")
    assert next(vlm.model.parameters()).dtype == torch.bfloat16
    assert vlm.model.config._attn_implementation == "eager"
    (turns,) = vlm.score_conversations([_single(0)])
    assert np.isfinite(turns[0].mean)
    assert len(vlm.generate_conversations([Conversation.single(_image(0), "What is this?")], max_new_tokens=3)) == 1


def test_make_family_zoo_script_runs(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))  # this checkout's byorn, not an installed one
    out = subprocess.run([sys.executable, "scripts/make_family_zoo.py", "--out", str(tmp_path),
                          "--families", "llava,gemma3", "--seed", "1"], cwd=ROOT, capture_output=True, text=True,
                         env=env)
    assert out.returncode == 0, out.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gemma3", "llava"]
    assert VLM.load(tmp_path / "gemma3", device="cpu").family == "gemma3"
    bad = subprocess.run([sys.executable, "scripts/make_family_zoo.py", "--out", str(tmp_path),
                          "--families", "nope"], cwd=ROOT, capture_output=True, text=True, env=env)
    assert bad.returncode != 0 and "unknown families" in bad.stderr


@pytest.mark.parametrize("fam", ALL)
def test_blank_images_keep_the_response_tokens_aligned(models, fam):
    """The grounding scores compare each response token with the image and with ``blank_image``: in every
    family the blank copy (same size) gives the same tokens, and the image changes their surprisals."""
    from byorn.scoring import aggregate, blank_image

    vlm = models(fam)
    convs = [_single(0), _single(1)] + ([_two_images()] if _supports(fam, "multi_image") else [])
    blank = [Conversation(c.turns, [blank_image(im) for im in c.images]) for c in convs]
    real, empty = vlm.score_conversations(convs), vlm.score_conversations(blank)
    for r, b in zip(real, empty):
        assert [t.tokens for t in r] == [t.tokens for t in b]
    s = [t.surprisals for turns in real for t in turns]
    g = aggregate(s, "grounding", blank=[t.surprisals for turns in empty for t in turns])
    assert np.all(np.isfinite(g)) and np.any(g != 0.0)
