"""The ``byorn`` command line: world, poison, audit, train, eval, bench.

Each subcommand is a thin wrapper: parse, call the library, write files,
print a short summary.  Long steps show a progress bar.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import typing
from pathlib import Path

from tqdm.auto import tqdm

from .scoring import SCORE_METHODS
from .split import parse_p

log = logging.getLogger("byorn")

CLEAN_METRICS = ("bleu", "cider", "exact_match")


# ----------------------------------------------------------------------- helpers
def add_dataclass_args(parser: argparse.ArgumentParser, cls, exclude: tuple[str, ...] = ()) -> None:
    """One ``--flag`` per dataclass field, typed, with its help text."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in exclude:
            continue
        flag = "--" + f.name.replace("_", "-")
        helptext = f.metadata.get("help", "") + f" (default: {f.default})"
        typ = hints[f.name]
        args = [a for a in typing.get_args(typ) if a is not type(None)]
        base = args[0] if args else typ
        if set(args) == {float, str}:  # the split's p: a number or "auto"
            base = parse_p
        if base is bool:  # bool or bool | None: --flag / --no-flag (None = unset)
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction,
                                default=f.default, help=f.metadata.get("help", ""))
            continue
        parser.add_argument(flag, dest=f.name, type=base, default=f.default, help=helptext)


def dataclass_from_args(cls, ns: argparse.Namespace, **extra):
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {k: v for k, v in vars(ns).items() if k in names}
    kwargs.update(extra)
    return cls(**kwargs)


class _Bar:
    """A tqdm bar fed with (fraction, message) or (done, total) callbacks."""

    def __init__(self, desc: str):
        self.bar = tqdm(total=100, desc=desc, unit="%", leave=False)

    def fraction(self, frac: float, msg: str = "") -> None:
        self.bar.n = int(100 * frac)
        if msg:
            self.bar.set_postfix_str(msg, refresh=False)
        self.bar.refresh()

    def count(self, done: int, total: int) -> None:
        self.fraction(done / max(total, 1))

    def close(self) -> None:
        self.bar.close()


def _write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, default=str))


def _load(path: str, args: argparse.Namespace | None = None, with_report: bool = False):
    """Load ``path`` with the load options of ``args`` (LoadConfig flags), else the defaults."""
    from .data.io import LoadConfig, load_dataset_with_report

    cfg = dataclass_from_args(LoadConfig, args) if args is not None else LoadConfig()
    ds, report = load_dataset_with_report(path, cfg)
    if report.n_skipped:
        log.warning("%s", report.summary())
    return (ds, report) if with_report else ds


def _main_process() -> bool:
    from .runtime import process_state

    return process_state().is_main_process


DTYPES = ("auto", "fp32", "bf16", "fp16")


def _load_vlm(path: str | None, dtype: str = "fp32"):
    import torch

    from .models import VLM

    torch_dtype = {"auto": None, "fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    vlm = VLM.load(path, dtype=torch_dtype)
    for w in vlm.warnings:  # loud: a model trained here may be silently wrong otherwise
        print(f"WARNING: {w}", file=sys.stderr)
    return vlm


# ---------------------------------------------------------------------- commands
def cmd_world(a) -> None:
    from .data.io import save_llava_json
    from .world import make_captions

    out = Path(a.out)
    for split, n in (("train", a.n_train), ("test", a.n_test)):
        path = save_llava_json(make_captions(n, a.seed, split), out / split)
        print(f"wrote {n} {split} samples to {path}")


def cmd_poison(a) -> None:
    from .attacks import Target, get_attack, poison
    from .data.io import save_llava_json

    train = _load(a.data)
    test = _load(a.test) if a.test else None
    target = Target(mode=a.target_mode, text=a.target, source=a.source)
    res = poison(train, get_attack(a.attack), rate=a.rate, target=target, seed=a.seed, test=test)
    out = Path(a.out)
    save_llava_json(res.train, out / "train")
    _write_json(out / "ground_truth.json", res.mask)
    _write_json(out / "poison.json", res.config)
    if res.triggered_test is not None:
        save_llava_json(res.triggered_test, out / "test_triggered")
    for name, ds in res.extra_tests.items():
        save_llava_json(ds, out / f"test_{name}")
    print(f"poisoned {len(res.poisoned_ids)}/{len(res.train)} samples with {a.attack}; "
          f"training set {out / 'train' / 'data.json'}, ground truth {out / 'ground_truth.json'}")


def cmd_audit(a) -> None:
    from .audit import AuditConfig, run_audit
    from .metrics import detection_metrics

    ds, load_report = _load(a.data, a, with_report=True)
    vlm = _load_vlm(a.model, a.dtype)
    gt = json.loads(Path(a.ground_truth).read_text()) if a.ground_truth else None
    out = Path(a.out)
    bar = _Bar("audit") if _main_process() else None
    cfg = dataclass_from_args(AuditConfig, a, skip_invalid=a.skip_invalid)
    audit = run_audit(ds, vlm, cfg, ground_truth=gt, work_dir=out / ".shards",
                      progress=bar.fraction if bar else None)
    if audit is None:  # another process of `accelerate launch`: the main one writes the audit
        return
    bar.close()
    audit.meta["load_report"] = load_report.to_dict()
    t = audit.table
    det = None
    if gt is not None:
        per_sample = t.drop_duplicates("id")  # a sample's score is its most suspicious turn
        flagged = t.groupby("id", sort=False)["suspicious"].any().reindex(per_sample["id"]).to_numpy()
        det = detection_metrics(per_sample["sample_score"], [bool(gt.get(i)) for i in per_sample["id"]],
                                flagged=flagged)
        audit.meta["detection"] = det
    audit.save(out)
    import shutil
    shutil.rmtree(out / ".shards", ignore_errors=True)
    n_skip = len(audit.meta.get("skipped") or {}) + load_report.n_skipped
    print(f"audited {t['id'].nunique()} samples ({len(t)} assistant turns): {int(t['suspicious'].sum())} turns "
          f"suspicious (score > {audit.threshold:.3f}); table {out / 'audit.parquet'}"
          + (f"; {n_skip} invalid samples skipped (listed in audit.json)" if n_skip else ""))
    print(f"split ({audit.score_method} score) {audit.split_info.describe()}")
    if det is not None:
        print("detection: " + ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in det.items()))


def _load_decisions(path: str | None, dataset):
    """The decisions of ``dataset`` in a decision CSV or SQLite store; what was not applied is logged."""
    if not path:
        return None
    from .export import read_decisions_file

    known = ((s.id, k) for s in dataset for k in range(s.n_turns))
    decisions, report = read_decisions_file(path, dataset.fingerprint(), known)  # DecisionFileError: clear
    log.info("%s", report.summary())
    for warning in report.warnings:
        log.warning("decisions %s: %s", path, warning)
    return decisions


def cmd_train(a) -> None:
    from .audit import Audit
    from .evaluate import EvalSuite
    from .train import Callback, TrainConfig, load_run_config, train

    ds = _load(a.data, a)
    if a.resume:
        saved = load_run_config(a.resume).get("train_config", {})
        cfg = TrainConfig(**{**saved, "out_dir": a.resume})
    else:
        if not a.out:
            raise ValueError("give --out (a new run folder) or --resume RUN")
        cfg = dataclass_from_args(TrainConfig, a, out_dir=a.out)
    audit = Audit.load(a.audit) if a.audit else None
    main = _main_process()
    bar = tqdm(desc=f"train {cfg.method}", unit="step", disable=not main)

    class _Progress(Callback):
        def on_train_begin(self, st):
            bar.total = st.total_steps
            bar.n = st.step
            bar.refresh()

        def on_step_end(self, st):
            bar.update(1)
            bar.set_postfix(loss=f"{st.loss:.3f}", refresh=False)

        def on_evaluate(self, st, m):
            log.info("step %d: %s", st.step, {k: v for k, v in m.items() if isinstance(v, float)})

    evals = EvalSuite(_load(a.eval_data) if a.eval_data else None, _load(a.triggered) if a.triggered else None,
                      a.target, clean_metric=a.clean_metric)
    res = train(ds, cfg, vlm=_load_vlm(a.model, a.dtype), audit=audit, decisions=_load_decisions(a.decisions, ds),
                evals=evals, callbacks=[_Progress()], resume=bool(a.resume), copy_model=False)
    bar.close()
    if main:
        shown = {k: v for k, v in res.metrics.items() if isinstance(v, (int, float, str)) and k != "plan"}
        print(json.dumps(shown, indent=2))
        print(f"run folder: {res.out_dir}")


def cmd_eval(a) -> None:
    from .evaluate import EvalSuite, evaluate

    vlm = _load_vlm(a.model, a.dtype)
    clean = _load(a.data)
    triggered = _load(a.triggered) if a.triggered else (clean if a.target else None)
    clean_for_metrics = None if (a.target and not a.triggered) else clean
    bar = _Bar("eval")
    suite = EvalSuite(clean_for_metrics, triggered, a.target, clean_metric=a.clean_metric, max_samples=a.max_samples)
    m = evaluate(vlm, suite, progress=bar.count)
    bar.close()
    out = Path(a.out) if a.out else Path(a.model) / "eval.json"
    _write_json(out, m)
    print(json.dumps({k: v for k, v in m.items() if not k.endswith("examples")}, indent=2))
    print(f"wrote {out}")


def cmd_bench(a) -> None:
    from .bench import BenchConfig, load_rows, run_bench, write_report

    base = BenchConfig.quick() if a.quick else BenchConfig()
    changes = {}
    for name, cast in (("scenarios", str), ("defenses", str), ("rates", float), ("seeds", int)):
        value = getattr(a, name)
        if value:
            changes[name] = tuple(cast(x) for x in value.split(","))
    for name in ("n_train", "n_test", "epochs", "score", "p"):
        if getattr(a, name) is not None:
            changes[name] = getattr(a, name)
    cfg = BenchConfig(**{**vars(base), **changes})
    out = Path(a.out)
    if not a.report_only:
        bar = _Bar("bench")
        run_bench(cfg, out, progress=bar.fraction)
        bar.close()
    print(write_report(load_rows(out), out))
    print(f"tables {out / 'results.md'}, figure {out / 'tradeoff.png'}, rows {out / 'rows'}")


# ------------------------------------------------------------------------ parser
def _data_args(p: argparse.ArgumentParser) -> None:
    from .data.io import LoadConfig

    p.add_argument("--data", required=True, help="LLaVA JSON, messages JSONL, COCO captions JSON, Parquet "
                   "or a datasets folder")
    add_dataclass_args(p, LoadConfig, exclude=("allow_external_images", "fingerprint_cache"))
    p.add_argument("--model", default=None, help="model folder (default: the embedded tiny model)")
    p.add_argument("--dtype", default="fp32", choices=DTYPES, help="dtype to load the model in (bf16 on GPUs)")


def _eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--eval-data", help="clean test data for evaluation")
    p.add_argument("--triggered", help="triggered test data for ASR (needs --target)")
    p.add_argument("--target", help="attack target sentence, for ASR")
    p.add_argument("--clean-metric", default="cider", choices=sorted(CLEAN_METRICS),
                   help="the clean metric runs report as their headline")


def build_parser() -> argparse.ArgumentParser:
    from .attacks import ATTACKS, TARGET_MODES
    from .audit import AuditConfig
    from .defenses import DEFENSES
    from .train import TrainConfig

    ap = argparse.ArgumentParser(prog="byorn", description="BYORn Studio: audit VLM fine-tuning data and "
                                 "defend fine-tuning against backdoors.")
    ap.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("world", help="write the embedded world's fine-tuning and test splits (LLaVA JSON + PNG)")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-train", type=int, default=2000)
    p.add_argument("--n-test", type=int, default=300)
    p.set_defaults(fn=cmd_world)

    p = sub.add_parser("poison", help="poison a dataset: poisoned training set, ground truth, triggered test set")
    p.add_argument("--data", required=True, help="clean training data (LLaVA JSON, JSONL or datasets folder)")
    p.add_argument("--test", help="clean test data to trigger for ASR")
    p.add_argument("--attack", required=True, choices=sorted(ATTACKS))
    p.add_argument("--rate", type=float, required=True, help="fraction of samples poisoned")
    p.add_argument("--target", default=None, help="target sentence or concept word")
    p.add_argument("--target-mode", default="replace", choices=TARGET_MODES)
    p.add_argument("--source", default="circle", help="word replaced by --target-mode substitute")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.set_defaults(fn=cmd_poison)

    p = sub.add_parser("audit", help="score every assistant turn under the reference model and flag the suspicious "
                       "(resumable; under `accelerate launch` the processes share the work)")
    _data_args(p)
    p.add_argument("--ground-truth", help="id -> poisoned JSON, for evaluation columns only")
    p.add_argument("--out", required=True, help="audit folder (an interrupted audit resumes there)")
    add_dataclass_args(p, AuditConfig, exclude=("skip_invalid",))
    p.set_defaults(fn=cmd_audit)

    p = sub.add_parser("train", help=f"fine-tune under a defense ({', '.join(sorted(DEFENSES))})")
    _data_args(p)
    p.add_argument("--audit", help="audit folder from `byorn audit` of this data and model (else scored here)")
    p.add_argument("--decisions", help="review decisions: the app's SQLite file or its CSV export")
    _eval_args(p)
    p.add_argument("--out", help="new run folder")
    p.add_argument("--resume", metavar="RUN", help="continue a cancelled or killed run from its last checkpoint "
                   "(its settings are read from RUN/config.json)")
    add_dataclass_args(p, TrainConfig, exclude=("out_dir",))
    p.set_defaults(fn=cmd_train)

    p = sub.add_parser("eval", help="clean metrics and (given a target) ASR of a model")
    p.add_argument("--model", required=True)
    p.add_argument("--dtype", default="fp32", choices=DTYPES, help="dtype to load the model in")
    p.add_argument("--data", required=True, help="clean test data (or triggered data, with --target only)")
    p.add_argument("--triggered", help="triggered test data")
    p.add_argument("--target", help="attack target sentence")
    p.add_argument("--clean-metric", default="cider", choices=sorted(CLEAN_METRICS))
    p.add_argument("--max-samples", type=int, default=None)
    p.add_argument("--out", help="JSON file (default: MODEL/eval.json)")
    p.set_defaults(fn=cmd_eval)

    p = sub.add_parser("bench", help="scenarios x defenses x poison rates x seeds on the embedded world "
                       "(resumable): rows, results.md, tradeoff.png")
    p.add_argument("--quick", action="store_true", help="the 15-minute CPU configuration (4 paper attacks, "
                   "sft / byorn-f / byorn, 10 %%, one seed)")
    p.add_argument("--scenarios", help="comma-separated scenarios (default: all)")
    p.add_argument("--defenses", help="comma-separated defenses (default: all)")
    p.add_argument("--rates", help="comma-separated poison rates, e.g. 0.01,0.1")
    p.add_argument("--seeds", help="comma-separated seeds, e.g. 0,1,2")
    p.add_argument("--n-train", type=int, default=None)
    p.add_argument("--n-test", type=int, default=None)
    p.add_argument("--epochs", type=float, default=None)
    p.add_argument("--score", default=None, choices=SCORE_METHODS,
                   help="the score BYORn and BYORn-F flag by (default: the library's; the paper: mean)")
    p.add_argument("--p", default=None, type=parse_p,
                   help="their split: auto or a percentile (default: the library's; the paper: 0.6). Rows of the "
                        "paper's setting are named byorn, others byorn@<score>[@auto|@p<p>]")
    p.add_argument("--report-only", action="store_true", help="only rewrite results.md and the figure")
    p.add_argument("--out", required=True, help="bench folder (an interrupted bench resumes there)")
    p.set_defaults(fn=cmd_bench)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    from .data import DataError
    from .models import ModelError

    try:
        args.fn(args)
    except (DataError, ModelError, FileNotFoundError, FileExistsError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
