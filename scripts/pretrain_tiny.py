"""Build and pretrain the embedded tiny LLaVA; save it to assets/tiny-llava.

Seeded and deterministic on CPU (same torch build, same thread count):

    python scripts/pretrain_tiny.py --out assets/tiny-llava

The pretraining task is the world's question answering and plain listing
(byorn.world.make_pretrain), *not* the downstream positional captions, so
that fine-tuning on the downstream task visibly improves it.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import random
import time
from pathlib import Path

import numpy as np
import torch

from byorn.models import VLM
from byorn.models.tiny import TinyConfig, build_model, build_processor, train_tokenizer
from byorn.world import corpus_text, make_captions, make_pretrain

log = logging.getLogger("pretrain_tiny")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="assets/tiny-llava")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n", type=int, default=24000, help="pretraining samples")
    ap.add_argument("--epochs", type=float, default=4)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    random.seed(args.seed), np.random.seed(args.seed), torch.manual_seed(args.seed)

    cfg = TinyConfig()
    tokenizer = train_tokenizer(corpus_text(args.seed), cfg.vocab_size)
    processor = build_processor(tokenizer, cfg)
    vlm = VLM(build_model(tokenizer, cfg, seed=args.seed), processor, name="tiny-llava")
    n_params = sum(p.numel() for p in vlm.model.parameters())
    log.info("tokenizer %d tokens, model %.2f M parameters", len(tokenizer), n_params / 1e6)

    data = make_pretrain(args.n, args.seed)
    steps = int(math.ceil(len(data) / args.batch_size) * args.epochs)
    opt = torch.optim.AdamW(vlm.model.parameters(), lr=args.lr, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 200) * 0.5 * (1 + math.cos(math.pi * s / steps)))
    gen = torch.Generator().manual_seed(args.seed)
    vlm.model.train()
    t0, step = time.time(), 0
    while step < steps:
        order = torch.randperm(len(data), generator=gen).tolist()
        for start in range(0, len(order) - args.batch_size + 1, args.batch_size):
            batch_s = [data[i] for i in order[start:start + args.batch_size]]
            batch = vlm.collate([s.image for s in batch_s], [s.instruction for s in batch_s],
                                [s.response for s in batch_s])
            loss = vlm.model(**batch).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(vlm.model.parameters(), 1.0)
            opt.step(), sched.step()
            step += 1
            if step % 100 == 0:
                log.info("step %d/%d loss %.4f %.1f samples/s", step, steps, loss.item(),
                         step * args.batch_size / (time.time() - t0))
            if step >= steps:
                break
    vlm.model.eval()
    out = vlm.save(args.out)
    probe = make_captions(8, args.seed, "probe")
    preds = vlm.generate([s.image for s in probe], [s.instruction for s in probe])
    for s, p in zip(probe, preds):
        log.info("%s | ref: %s | pred: %s", s.instruction, s.response, p)
    (out / "pretrain_meta.json").write_text(json.dumps({
        "script": "scripts/pretrain_tiny.py", "args": vars(args), "tiny_config": cfg.__dict__,
        "parameters": n_params, "final_loss": loss.item(), "steps": steps,
        "wall_s": round(time.time() - t0, 1), "torch": torch.__version__}, indent=2))
    log.info("saved to %s in %.0f s", out, time.time() - t0)


if __name__ == "__main__":
    main()
