"""How the renderer places turns where a released template re-renders them or writes no end-of-turn token.

Known answers on the zoo checkpoints (byorn.models.zoo_recent) of Qwen3.5, LLaVA-OneVision, Gemma 4 and
GLM-4.1V / 4.6V: the text each turn is trained and scored in, against the template's own renderings.
The per-family test set (labels, scores = loss, batching, generation) is tests/test_families.py.
"""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from byorn.data import Conversation
from byorn.data.sample import Turn
from byorn.models import VLM, ModelError, families, templates_recent, zoo
from byorn.models.render import Renderer, to_messages


@pytest.fixture(scope="module")
def load(zoo_dir):
    cache: dict[str, VLM] = {}

    def get(fam: str) -> VLM:
        if fam not in cache:
            if not (zoo_dir / fam / "config.json").exists():
                zoo.build(fam, zoo_dir / fam)
            cache[fam] = VLM.load(zoo_dir / fam, device="cpu")
        return cache[fam]
    return get


def _image(seed: int) -> Image.Image:
    return Image.fromarray((np.random.RandomState(seed).rand(32, 32, 3) * 255).astype("uint8"))


def _chat() -> Conversation:
    return Conversation([Turn("user", "<image>What is it?"), Turn("assistant", "A red cat."),
                         Turn("user", "Are you sure?"), Turn("assistant", "Yes, sure.")], [_image(1)])


def _template(vlm: VLM, conv: Conversation, generation: bool = False) -> str:
    """The template's own rendering of the whole conversation."""
    return vlm.renderer._apply(to_messages(conv, vlm.renderer.string_text), generation)


def _turns(vlm: VLM, conv: Conversation) -> list[str]:
    r = vlm.renderer.render(conv)
    return [r.text[a:b] for a, b in r.spans]


def test_qwen3_5_every_turn_follows_its_own_generation_prompt(load):
    vlm = load("qwen3_5")
    conv = _chat()
    text = vlm.renderer.render(conv).text
    block = "<|im_start|>assistant\n<think>\n\n</think>\n\n"
    assert text.count(block + "A red cat.<|im_end|>") == 1 and text.count(block + "Yes, sure.<|im_end|>") == 1
    # the released template writes the empty block only after the last user turn ...
    own = _template(vlm, conv)
    assert "<|im_start|>assistant\nA red cat.<|im_end|>" in own and own.count("<think>") == 1
    # ... and each turn here is exactly the generation prompt it is answered from, plus the answer
    prompt = vlm.renderer.render(Conversation(conv.turns[:3], conv.images), generation=True).text
    assert prompt == _template(vlm, Conversation(conv.turns[:3], conv.images), generation=True).replace(
        "assistant\nA red cat.", "assistant\n<think>\n\n</think>\n\nA red cat.")
    assert text.startswith(prompt) and _turns(vlm, conv) == ["A red cat.<|im_end|>", "Yes, sure.<|im_end|>"]


def test_llava_onevision_answers_follow_the_generation_prompt_not_the_spaced_turn_opener(load):
    vlm = load("llava_onevision")
    conv = _chat()
    own, text = _template(vlm, conv), vlm.renderer.render(conv).text
    assert "<|im_start|>assistant \nA red cat.<|im_end|>" in own  # the released template's answered turn
    assert "<|im_start|>assistant\nA red cat.<|im_end|><|im_start|>user" in text  # as generated (and trained)
    assert text.replace("assistant\n", "assistant \n") == own
    assert _turns(vlm, conv) == ["A red cat.<|im_end|>", "Yes, sure.<|im_end|>"]


@pytest.mark.parametrize("template", ["GEMMA4", "GEMMA4_SMALL"])
def test_gemma4_with_and_without_the_empty_thought_channel(load, template):
    """The 26B / 31B generation prompt opens an empty thought channel, the E2B / E4B one does not."""
    vlm = load("gemma4")
    renderer = Renderer(SimpleNamespace(chat_template=getattr(templates_recent, template)), vlm.tokenizer,
                        families.family_of("gemma4"))
    conv = _chat()
    r = renderer.render(conv)
    assert [r.text[a:b] for a, b in r.spans] == ["A red cat.<turn|>", "Yes, sure.<turn|>"]
    channel = "<|channel>thought\n<channel|>"
    assert r.text.count("<|turn>model\n" + (channel if template == "GEMMA4" else "") + "A red cat.") == 1
    assert r.text.count(channel) == (2 if template == "GEMMA4" else 0)
    assert r.text.startswith("<bos><|turn>user\n") and renderer.stop_rule == "template"


@pytest.mark.parametrize("fam", ["glm4v", "glm46v", "glm4v_moe"])
def test_glm_turns_end_with_the_next_user_token_never_a_mid_conversation_eos(load, fam):
    vlm = load(fam)
    user, eos = vlm.tokenizer.convert_tokens_to_ids(["<|user|>", "<|endoftext|>"])
    assert user in vlm.model.generation_config.eos_token_id  # the released stop
    assert (vlm.renderer.stop, vlm.renderer.stop_rule, vlm.warnings) == ("<|user|>", "next_turn", [])
    conv = _chat()
    text = vlm.renderer.render(conv).text
    assert "<|endoftext|>" not in text and _turns(vlm, conv) == ["A red cat.<|user|>", "Yes, sure.<|user|>"]
    # the template's own rendering, with the closing <|user|> of the last turn: nothing inserted mid-conversation
    assert text == _template(vlm, conv) + "<|user|>"
    batch = vlm.encode([conv])
    labels = batch.inputs["labels"][0]
    assert eos not in labels.tolist() and (labels == user).sum() == 2
    assert user in vlm.stop_ids


def test_a_template_that_rewrites_an_earlier_turn_later_names_that_turn(load):
    vlm = load("qwen3_5")
    # answers before the last user turn lose their last word: more than whitespace or reasoning
    template = templates_recent.QWEN3_5.replace(
        "{{- '<|im_start|>' + message.role + '\\n' + content }}",
        "{{- '<|im_start|>' + message.role + '\\n' + content.split(' ')[0] }}")
    renderer = Renderer(SimpleNamespace(chat_template=template), vlm.tokenizer, families.family_of("qwen3_5"))
    assert renderer.render(Conversation(_chat().turns[:2], [_image(1)])).spans  # one turn: fine
    with pytest.raises(ModelError, match=r"cannot render assistant turn 0 faithfully: once a later turn follows.*"
                                         r"A red cat"):
        renderer.render(_chat())


def test_a_generic_model_whose_stop_is_unknown_is_warned_about_loudly(zoo_dir, tmp_path, monkeypatch, capsys):
    """No end-of-turn token in the template and none the generation config names between turns: the CLI
    output and the audit meta (which the app shows) carry the warning."""
    from byorn.cli import main

    if not (zoo_dir / "llava" / "config.json").exists():
        zoo.build("llava", zoo_dir / "llava")
    assert VLM.load(zoo_dir / "llava", device="cpu").warnings == []  # LLaVA-1.5: a verified special case
    monkeypatch.delitem(families.FAMILIES, "llava")  # the same checkpoint as an unknown family
    vlm = VLM.load(zoo_dir / "llava", device="cpu")
    assert not vlm.spec.verified and vlm.renderer.stop_rule == "eos"
    assert len(vlm.warnings) == 1 and "stop this model was trained with is unknown" in vlm.warnings[0]
    assert main(["world", "--out", str(tmp_path / "world"), "--n-train", "6", "--n-test", "2"]) == 0
    capsys.readouterr()
    assert main(["audit", "--data", str(tmp_path / "world" / "train" / "data.json"), "--model",
                 str(zoo_dir / "llava"), "--out", str(tmp_path / "audit"), "--no-maps", "--no-propose"]) == 0
    assert "WARNING:" in capsys.readouterr().err
    meta = json.loads((tmp_path / "audit" / "audit.json").read_text())
    assert meta["model_warnings"] == vlm.warnings


@pytest.mark.parametrize("fam", ["gemma4", "qwen3_5", "llava_onevision", "glm4v", "glm46v"])
def test_a_system_turn_is_written_as_text(load, fam):
    """Templates that print a message's content as it is (GLM-4.1V's answers, Gemma 4's system turn) get
    text-only turns as strings, never the Python form of a list of parts."""
    vlm = load(fam)
    conv = Conversation([Turn("system", "Be brief."), Turn("user", "<image>What is it?"), Turn("assistant", "A cat.")],
                        [_image(1)])
    text = vlm.renderer.render(conv).text
    assert "Be brief." in text and "'type'" not in text and "[{" not in text
    (turns,) = vlm.score_conversations([conv])
    assert "".join(turns[0].tokens).strip().startswith("A cat.")
