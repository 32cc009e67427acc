"""GPU-scale figures from random-init models at real sizes (no weights needed).

Builds, from configs, a LLaVA-1.5-7B-shaped model (CLIP ViT-L/14 at 336 px +
Llama-2-7B) and a Qwen2-VL-2B-shaped model (448 px, dynamic resolution), in
bf16 on the GPU, with the real processor classes (small offline tokenizers:
token ids, not weights, are what the shapes need).  For each it measures,
through the same code the CLI runs (:class:`byorn.models.VLM`,
:func:`byorn.audit.run_audit`, :func:`byorn.train.train`):

* scoring samples/s (reference NLL, no grad),
* greedy and sampled generation samples/s (KV-cached, batched, 32 new tokens),
* LoRA training samples/s (bf16, language-model attention + MLP, frozen vision),
* peak GPU memory of each phase,
* BYORn's wall time against SFT's on the same 10 % poisoned set (BYORn's
  audit included), both measured in this one run, and their peak memories.

``--tiny`` runs the same code with tiny shapes on the CPU in seconds (a test
runs it).  Results go to ``--out`` (``gpu.json``, ``gpu.md``).  Run on a GPU
machine as: ``python benchmarks/gpu.py --out $OUT``.
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from byorn.attacks import Target, get_attack, poison  # noqa: E402
from byorn.audit import AuditConfig, run_audit  # noqa: E402
from byorn.models import VLM, templates, zoo  # noqa: E402
from byorn.models.loading import image_only  # noqa: E402
from byorn.train import TrainConfig, train  # noqa: E402
from byorn.world import make_captions  # noqa: E402

log = logging.getLogger("gpu-bench")


@dataclass
class Shape:
    name: str
    image: int            # image side in pixels
    text: dict            # text-model config overrides
    vision: dict          # vision-model config overrides


LLAVA_7B = Shape("llava-1.5-7b", 336,
                 dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                      num_key_value_heads=32, max_position_embeddings=4096, vocab_size=32064),
                 dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                      patch_size=14, projection_dim=768))
QWEN2VL_2B = Shape("qwen2-vl-2b", 448,
                   dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                        num_key_value_heads=2, max_position_embeddings=32768, vocab_size=151936,
                        rope_parameters={"rope_type": "default", "mrope_section": [16, 24, 24]}),
                   dict(depth=32, embed_dim=1280, hidden_size=1536, num_heads=16, mlp_ratio=4, patch_size=14,
                        spatial_merge_size=2))
TINY = {"llava-1.5-7b": Shape("llava-tiny", 56, dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                                     num_attention_heads=4, num_key_value_heads=4,
                                                     max_position_embeddings=1024, vocab_size=512),
                              dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                   patch_size=14, projection_dim=32)),
        "qwen2-vl-2b": Shape("qwen2-vl-tiny", 56, dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                                       num_attention_heads=4, num_key_value_heads=2,
                                                       max_position_embeddings=1024, vocab_size=700,
                                                       rope_parameters={"rope_type": "default",
                                                                        "mrope_section": [2, 3, 3]}),
                             dict(depth=2, embed_dim=32, hidden_size=64, num_heads=2, mlp_ratio=2, patch_size=14,
                                  spatial_merge_size=2))}


def build_llava(shape: Shape, device: str, dtype: torch.dtype, seed: int = 0) -> VLM:
    from transformers import CLIPImageProcessorPil, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    tok = zoo.make_tokenizer("spm", ["<unk>", "<s>", "</s>", "<image>", "<pad>"], bos="<s>", eos="</s>",
                             pad="<pad>", unk="<unk>", add_bos=True, extra={"image_token": "<image>"})
    side, patch = shape.image, shape.vision["patch_size"]
    ip = CLIPImageProcessorPil(size={"shortest_edge": side}, crop_size={"height": side, "width": side})
    proc = LlavaProcessor(image_processor=ip, tokenizer=tok, patch_size=patch, vision_feature_select_strategy="default",
                          num_additional_image_tokens=1, chat_template=templates.LLAVA_15)
    text = dict(shape.text, model_type="llama", pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                eos_token_id=tok.eos_token_id)
    vision = dict(shape.vision, model_type="clip_vision_model", image_size=side)
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_index=tok.convert_tokens_to_ids("<image>"),
                         image_seq_length=(side // patch) ** 2, vision_feature_select_strategy="default",
                         vision_feature_layer=-2, tie_word_embeddings=False)
    return _instantiate(LlavaForConditionalGeneration, config, proc, tok, ["</s>"], device, dtype, seed, shape.name)


def build_qwen2_vl(shape: Shape, device: str, dtype: torch.dtype, seed: int = 0) -> VLM:
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLImageProcessorPil, Qwen2VLProcessor

    tok = zoo._qwen_tokenizer()
    side, patch = shape.image, shape.vision["patch_size"]
    ip = Qwen2VLImageProcessorPil(patch_size=patch, merge_size=2, temporal_patch_size=2,
                                  min_pixels=side * side, max_pixels=side * side)
    proc = image_only(Qwen2VLProcessor)(image_processor=ip, tokenizer=tok, video_processor=None,
                                        chat_template=templates.QWEN2_VL)
    text = dict(shape.text, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=None)
    # the released Qwen2-VL-2B ties its input and output embeddings (the 7B does not)
    config = Qwen2VLConfig(text_config=text, vision_config=shape.vision, tie_word_embeddings=True,
                           **zoo._qwen_ids(tok))
    return _instantiate(Qwen2VLForConditionalGeneration, config, proc, tok, ["<|im_end|>", "<|endoftext|>"],
                        device, dtype, seed, shape.name)


def _instantiate(cls, config, proc, tok, stops, device, dtype, seed, name) -> VLM:
    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # build directly in bf16: a 7B model never exists in fp32
    try:
        with torch.device(device):
            model = cls(config)
    finally:
        torch.set_default_dtype(previous)
    gen = model.generation_config
    ids = [tok.convert_tokens_to_ids(t) for t in stops]
    gen.eos_token_id, gen.pad_token_id = ids, tok.pad_token_id
    model.eval()
    return VLM(model, proc, name=name, identity=f"random-{name}-seed{seed}")


BUILDERS = {"llava-1.5-7b": build_llava, "qwen2-vl-2b": build_qwen2_vl}


# ------------------------------------------------------------------- measuring --

def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _reset_peak() -> None:
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def _peak_gib() -> float | None:
    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if torch.cuda.is_available() else None


def _timed(fn, n: int) -> tuple[float, float | None]:
    """(samples/s, peak GiB) of ``fn()`` processing ``n`` samples."""
    _sync()
    _reset_peak()
    t = time.perf_counter()
    fn()
    _sync()
    return round(n / (time.perf_counter() - t), 2), _peak_gib()


def measure(key: str, args, out: Path) -> dict:
    shape = TINY[key] if args.tiny else {"llava-1.5-7b": LLAVA_7B, "qwen2-vl-2b": QWEN2VL_2B}[key]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    build = lambda: BUILDERS[key](shape, device, dtype)  # noqa: E731
    t = time.perf_counter()
    vlm = build()
    row: dict = {"model": shape.name, "image_px": shape.image, "device": device, "dtype": str(dtype),
                 "parameters_m": round(sum(p.numel() for p in vlm.model.parameters()) / 1e6, 1),
                 "build_s": round(time.perf_counter() - t, 1)}
    data = make_captions(args.n, 0, "train")
    convs = [s.conversation() for s in data]
    prompts = [c.prompt_for(0) for c in convs]
    vlm.score_conversations(convs[:args.batch], batch_size=args.batch)  # warm-up (kernels, allocator)
    row["score_samples_s"], row["score_peak_gib"] = _timed(
        lambda: vlm.score_conversations(convs, batch_size=args.batch), len(convs))
    n_gen = min(len(prompts), args.n_generate)
    for mode, temp in (("greedy", 0.0), ("sampled", 1.0)):
        row[f"generate_{mode}_samples_s"], row[f"generate_{mode}_peak_gib"] = _timed(
            lambda: vlm.generate_conversations(prompts[:n_gen], max_new_tokens=32, temperature=temp,
                                               batch_size=args.gen_batch), n_gen)
    # SFT and BYORn on the same 10 % poisoned set, LoRA in bf16, from a fresh copy each
    pr = poison(data, get_attack("badnets"), rate=0.1, target=Target(), seed=0)
    common = dict(epochs=args.epochs, batch_size=args.train_batch, lora=True, lr=2e-4, warmup_steps=2,
                  precision="bf16", gradient_checkpointing=args.gradient_checkpointing, max_new_tokens=32,
                  seed=0, num_workers=args.workers)
    for method in ("sft", "byorn"):
        del vlm
        torch.cuda.empty_cache() if torch.cuda.is_available() else None
        vlm = build()
        run_dir = out / f"run-{key}-{method}"
        shutil.rmtree(run_dir, ignore_errors=True)
        _sync()
        _reset_peak()
        t = time.perf_counter()
        audit = None
        if method == "byorn":
            audit = run_audit(pr.train, vlm, AuditConfig(propose=False, maps=False, batch_size=args.batch))
        res = train(pr.train, TrainConfig(method=method, out_dir=str(run_dir), **common), vlm=vlm, audit=audit,
                    copy_model=False)
        _sync()
        wall = time.perf_counter() - t
        row[f"{method}_wall_s"] = round(wall, 1)
        row[f"{method}_train_samples_s"] = round(res.metrics["steps"] * args.train_batch / res.metrics["train_s"], 2)
        row[f"{method}_peak_gib"] = _peak_gib()
        row[f"{method}_generate_s"] = res.metrics.get("generate_s")
        shutil.rmtree(run_dir, ignore_errors=True)
    row["byorn_over_sft_wall"] = round(row["byorn_wall_s"] / row["sft_wall_s"], 3)
    if row["sft_peak_gib"]:
        row["byorn_over_sft_peak_memory"] = round(row["byorn_peak_gib"] / row["sft_peak_gib"], 3)
    log.info("%s: %s", key, row)
    return row


def to_markdown(rows: list[dict], meta: dict) -> str:
    cols = [("model", "model"), ("parameters_m", "params (M)"), ("image_px", "image px"),
            ("score_samples_s", "score /s"), ("generate_greedy_samples_s", "greedy gen /s"),
            ("generate_sampled_samples_s", "sampled gen /s"), ("sft_train_samples_s", "LoRA train /s (SFT)"),
            ("sft_peak_gib", "SFT peak GiB"), ("byorn_peak_gib", "BYORn peak GiB"),
            ("byorn_over_sft_wall", "BYORn / SFT wall"), ("byorn_over_sft_peak_memory", "BYORn / SFT memory")]
    lines = [f"Device: {meta['device']}; torch {meta['torch']}; {meta['when']}", "",
             "| " + " | ".join(c[1] for c in cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(str(r.get(k, "")) for k, _ in cols) + " |")
    return "\n".join(lines) + "\n"


def check_shapes() -> dict[str, float]:
    """Parameter counts (millions) of the real-size models, built on the meta device (no memory)."""
    out = {}
    for key, shape in (("llava-1.5-7b", LLAVA_7B), ("qwen2-vl-2b", QWEN2VL_2B)):
        vlm = BUILDERS[key](shape, "meta", torch.bfloat16)
        out[shape.name] = round(sum(p.numel() for p in vlm.model.parameters()) / 1e6, 1)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="benchmarks/gpu-out")
    ap.add_argument("--tiny", action="store_true", help="tiny shapes on the CPU (seconds): checks the code path")
    ap.add_argument("--models", default="llava-1.5-7b,qwen2-vl-2b")
    ap.add_argument("--n", type=int, default=320, help="samples (scoring, and the poisoned training set)")
    ap.add_argument("--n-generate", type=int, default=128)
    ap.add_argument("--batch", type=int, default=32, help="scoring batch")
    ap.add_argument("--gen-batch", type=int, default=64)
    ap.add_argument("--train-batch", type=int, default=8)
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--gradient-checkpointing", action="store_true")
    ap.add_argument("--check-shapes", action="store_true", help="only build the real-size models on the meta "
                    "device and print their parameter counts")
    args = ap.parse_args(argv)
    if args.check_shapes:
        print(json.dumps(check_shapes()))
        return 0
    if args.tiny:
        args.n, args.n_generate, args.batch, args.gen_batch, args.train_batch, args.workers = 24, 8, 8, 8, 4, 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
            "torch": torch.__version__, "when": time.strftime("%Y-%m-%d %H:%M"), "args": vars(args)}
    rows = []
    for key in args.models.split(","):
        rows.append(measure(key, args, out))
        (out / "gpu.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    (out / "gpu.md").write_text(to_markdown(rows, meta))
    print(to_markdown(rows, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
