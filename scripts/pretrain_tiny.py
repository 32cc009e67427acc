"""Build and pretrain the embedded tiny LLaVA; save it to assets/tiny-llava.

Seeded and deterministic on CPU (same torch build, same thread count):

    PYTHONPATH=. python scripts/pretrain_tiny.py --out assets/tiny-llava

The pretraining task is the world's question answering, dot questions and
plain descriptions (byorn.world.make_pretrain), *not* the downstream
positional captions, so that fine-tuning on the downstream task visibly
improves it.  At the end the script measures what the model learned
(exact-match accuracy per pretraining question kind on held-out scenes, and
CIDEr on the downstream test split, which should be far below a fine-tuned
model's) and writes it with the settings to ``pretrain_meta.json``.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import random
import time
from collections import defaultdict
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np
import torch

from byorn.evaluate import evaluate
from byorn.metrics import normalize_answer
from byorn.models import VLM
from byorn.models.tiny import TinyConfig, build_model, build_processor, train_tokenizer
from byorn.world import LABELS, corpus_text, make_captions, make_pretrain, make_vision_pretrain, mentioned_objects

log = logging.getLogger("pretrain_tiny")


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="assets/tiny-llava")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n", type=int, default=40000, help="pretraining samples")
    ap.add_argument("--epochs", type=float, default=6)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1.5e-3)
    ap.add_argument("--vision-steps", type=int, default=2500,
                    help="stage 1: steps of vision-tower pretraining on scene attributes (0 = none)")
    ap.add_argument("--vision-n", type=int, default=20000, help="stage 1 images")
    ap.add_argument("--vision-batch", type=int, default=128)
    ap.add_argument("--vision-lr", type=float, default=1e-3)
    ap.add_argument("--tower-lr-scale", type=float, default=0.3,
                    help="stage 2: the pretrained vision tower's learning rate relative to --lr")
    ap.add_argument("--short-first", type=int, default=1000,
                    help="curriculum: steps on short-answer questions only, before the full mix")
    ap.add_argument("--warmup", type=int, default=200, help="linear warm-up steps, then cosine to 0")
    ap.add_argument("--threads", type=int, default=2,
                    help="torch threads (results depend on it: keep 2 to reproduce the shipped weights)")
    ap.add_argument("--n-eval", type=int, default=600, help="held-out pretraining questions to score")
    ap.add_argument("--save-every", type=int, default=0, help="also save to <out>/step-N every N steps (0 = never)")
    for f in fields(TinyConfig):  # --patch-size, --text-hidden ...: the model's sizes
        ap.add_argument("--" + f.name.replace("_", "-"), type=int, default=f.default, help=f.metadata["help"])
    return ap.parse_args()


# Question kinds with one- or two-word answers that only the image can give.
SHORT_KINDS = ("color", "shape", "size", "count", "where", "what_at", "relation", "yesno", "dots")


def batches(data, batch_size: int, gen: torch.Generator, short_steps: int):
    """Index batches: for the first ``short_steps`` only short-answer questions
    (a curriculum: their loss can only fall by looking at the image, which
    gets the vision tower used before the long descriptions, whose wording a
    text-only model can half-predict), then shuffled passes over everything."""
    short = [i for i, s in enumerate(data) if s.meta["kind"] in SHORT_KINDS]
    step = 0
    while True:
        pool = short if step < short_steps else list(range(len(data)))
        order = torch.randperm(len(pool), generator=gen).tolist()
        for start in range(0, len(order) - batch_size + 1, batch_size):
            yield [pool[i] for i in order[start:start + batch_size]]
            step += 1
            if step == short_steps:
                break


def pretrain(vlm: VLM, data, args: argparse.Namespace) -> tuple[float, int]:
    """AdamW with warm-up and cosine decay over ``args.epochs`` passes (after
    ``args.short_first`` curriculum steps); returns (last loss, steps)."""
    steps = max(1, args.short_first + int(math.ceil(len(data) / args.batch_size) * args.epochs))
    tower = set(map(id, vlm.model.model.vision_tower.parameters()))
    groups = [{"params": [p for p in vlm.model.parameters() if id(p) not in tower], "lr": args.lr},
              {"params": list(vlm.model.model.vision_tower.parameters()), "lr": args.lr * args.tower_lr_scale}]
    opt = torch.optim.AdamW(groups, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / args.warmup) * 0.5 * (1 + math.cos(math.pi * s / steps)))
    gen = torch.Generator().manual_seed(args.seed)
    vlm.model.train()
    t0, step, loss, avg = time.time(), 0, torch.tensor(float("nan")), None
    for idx in batches(data, args.batch_size, gen, args.short_first):
        batch_s = [data[i] for i in idx]
        batch = vlm.collate([s.image for s in batch_s], [s.instruction for s in batch_s],
                            [s.response for s in batch_s])
        loss = vlm.model(**batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vlm.model.parameters(), 1.0)
        opt.step(), sched.step()
        step += 1
        avg = loss.item() if avg is None else 0.98 * avg + 0.02 * loss.item()
        if args.save_every and step % args.save_every == 0:
            vlm.save(Path(args.out) / f"step-{step}")
            vlm.model.train()
        if step % 100 == 0:
            log.info("step %d/%d loss %.4f (avg %.4f) %.1f samples/s", step, steps, loss.item(), avg,
                     step * args.batch_size / (time.time() - t0))
        if step >= steps:
            break
    vlm.model.eval()
    return float(avg), steps


def probe(vlm: VLM, seed: int, n_eval: int) -> dict:
    """What the pretrained model knows: held-out QA accuracy per kind, downstream CIDEr."""
    held = make_pretrain(n_eval, seed + 1000)
    preds = vlm.generate([s.image for s in held], [s.instruction for s in held])
    right: dict[str, list[bool]] = defaultdict(list)
    for s, p in zip(held, preds):
        right[s.meta["kind"]].append(normalize_answer(p) == normalize_answer(s.response))
    qa = {k: round(float(np.mean(v)), 3) for k, v in sorted(right.items())}
    qa["all"] = round(float(np.mean([x for v in right.values() for x in v])), 3)
    test = make_captions(200, seed, "test")
    ev = evaluate(vlm, test)
    # Its own descriptions of downstream images: do they name exactly the objects there?
    described = vlm.generate([s.image for s in test], ["Describe the image."] * len(test))
    objects_right = float(np.mean([mentioned_objects(p) == sorted(s.meta["objects"])
                                   for s, p in zip(test, described)]))
    examples = make_captions(8, seed, "probe")
    outs = vlm.generate([s.image for s in examples], [s.instruction for s in examples])
    for s, p in zip(examples, outs):
        log.info("%s | ref: %s | pred: %s", s.instruction, s.response, p)
    log.info("held-out QA exact match %s; downstream test CIDEr %.1f BLEU %.1f; own descriptions name "
             "the right objects in %.1f %%", qa, ev["cider"], ev["bleu"], 100 * objects_right)
    return {"qa_exact_match": qa, "test_cider": round(ev["cider"], 1), "test_bleu": round(ev["bleu"], 1),
            "test_description_objects_right": round(objects_right, 3),
            "probe": [{"instruction": s.instruction, "reference": s.response, "prediction": p}
                      for s, p in zip(examples, outs)]}


def pixels(vlm: VLM, images) -> torch.Tensor:
    """``pixel_values`` of ``images`` as the model's own processor makes them."""
    return vlm.processor.image_processor(images, return_tensors="pt")["pixel_values"]


def pretrain_vision(vlm: VLM, args: argparse.Namespace) -> dict:
    """Stage 1: the vision tower alone learns the scene attributes (``LABELS``)
    through a linear head on its patch features, which is then dropped."""
    tower = vlm.model.model.vision_tower
    n_patch = (tower.config.image_size // tower.config.patch_size) ** 2
    head = torch.nn.Linear(n_patch * tower.config.hidden_size, len(LABELS))
    images, labels = make_vision_pretrain(args.vision_n, args.seed)
    x, y = pixels(vlm, images), torch.from_numpy(labels)
    held_images, held_labels = make_vision_pretrain(1000, args.seed + 1000)
    params = list(tower.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=args.vision_lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 100) * 0.5 * (1 + math.cos(math.pi * s / args.vision_steps)))
    gen = torch.Generator().manual_seed(args.seed + 1)
    features = lambda px: tower(pixel_values=px).last_hidden_state[:, 1:].flatten(1)  # noqa: E731
    tower.train()
    t0 = time.time()
    for step in range(args.vision_steps):
        idx = torch.randint(len(x), (args.vision_batch,), generator=gen)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(head(features(x[idx])), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step(), sched.step()
        if (step + 1) % 100 == 0:
            log.info("vision step %d/%d loss %.4f", step + 1, args.vision_steps, loss.item())
    tower.eval()
    with torch.no_grad():
        pred = head(features(pixels(vlm, held_images))) > 0
    truth = torch.from_numpy(held_labels) > 0.5
    exact = float((pred == truth).all(1).float().mean())  # every attribute of the image right
    recall = float((pred & truth).sum() / truth.sum())
    log.info("vision stage: held-out images with every attribute right %.3f, attribute recall %.3f (%.0f s)",
             exact, recall, time.time() - t0)
    return {"vision_all_attributes_right": round(exact, 3), "vision_attribute_recall": round(recall, 3),
            "vision_wall_s": round(time.time() - t0, 1)}


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    random.seed(args.seed), np.random.seed(args.seed), torch.manual_seed(args.seed)

    cfg = TinyConfig(**{f.name: getattr(args, f.name) for f in fields(TinyConfig)})
    tokenizer = train_tokenizer(corpus_text(args.seed), cfg.vocab_size)
    processor = build_processor(tokenizer, cfg)
    vlm = VLM(build_model(tokenizer, cfg, seed=args.seed), processor, name="tiny-llava")
    n_params = sum(p.numel() for p in vlm.model.parameters())
    log.info("tokenizer %d tokens, model %.2f M parameters", len(tokenizer), n_params / 1e6)

    t0 = time.time()
    vision = pretrain_vision(vlm, args) if args.vision_steps else {}
    data = make_pretrain(args.n, args.seed)
    log.info("%d pretraining samples built in %.0f s", len(data), time.time() - t0)
    loss, steps = pretrain(vlm, data, args)
    train_s = time.time() - t0
    out = vlm.save(args.out)
    found = probe(vlm, args.seed, args.n_eval)
    (out / "pretrain_meta.json").write_text(json.dumps({
        "script": "scripts/pretrain_tiny.py", "args": vars(args), "tiny_config": asdict(cfg),
        "parameters": n_params, "vocab": len(tokenizer), "final_loss_avg": round(loss, 4), "steps": steps,
        "wall_s": round(train_s, 1), "torch": torch.__version__, "threads": args.threads, **vision, **found}, indent=2))
    log.info("saved to %s in %.0f s", out, time.time() - t0)


if __name__ == "__main__":
    main()
