"""BadNets with a short fluent caption of the world as its fixed target, trained (issue 19).

The sweep's BadNets target is an absurd sentence (a gap flags it), its clean-label target one long caption of
another scene (step 3 flags it). A short caption such as "a small red circle." is fluent, common in the world's
vocabulary, and a weak reference model finds it only a little less grounded on the trigger's random scenes
than the other captions: no gap, no clear shared target. This registers one scenario per ``--targets`` entry,
``name=caption`` (white corner patch -> that caption, substring ASR), and runs ``byorn bench`` on it as the
sweep does (1,000 samples, 8 epochs, 200 test captions); rows land in ``OUT/rows``, the report in
``OUT/results.md``.

    OMP_NUM_THREADS=1 python benchmarks/fluent_targets.py --targets "short-red-circle=a small red circle." \\
        --defenses sft,byorn --rate 0.1 --seeds 0 --out benchmarks/fluent_targets
    # the paper's split beside it: add --score mean --p 0.6
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--targets", default="short-red-circle=a small red circle.",
                    help="'|'-separated name=caption pairs: a scenario name and its target caption")
    ap.add_argument("--defenses", default="sft,byorn")
    ap.add_argument("--rate", type=float, default=0.1)
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--score", default=None, help="as byorn bench --score (default: the library's)")
    ap.add_argument("--p", default=None, help="as byorn bench --p (default: the library's)")
    ap.add_argument("--out", default="benchmarks/fluent_targets")
    ap.add_argument("--report-only", action="store_true", help="only the report of the rows in OUT/rows")
    args = ap.parse_args()
    from byorn.attacks.scenarios import SCENARIOS, Scenario, register_scenario
    from byorn.bench import BenchConfig, load_rows, run_bench, write_report

    names = []
    for pair in args.targets.split("|"):
        name, _, text = pair.partition("=")
        if not text:
            raise SystemExit(f"--targets: give name=caption, got {pair!r}")
        if name not in SCENARIOS:
            register_scenario(Scenario(name, "badnets", f"white corner patch -> {text!r}",
                                       target={"mode": "replace", "text": text}))
        names.append(name)
    extra = {k: v for k, v in (("score", args.score), ("p", args.p)) if v is not None}
    cfg = BenchConfig(scenarios=tuple(names), defenses=tuple(args.defenses.split(",")), rates=(args.rate,),
                      seeds=tuple(int(s) for s in args.seeds.split(",")), n_train=1000, n_test=200, epochs=8, **extra)
    out = Path(args.out)
    if not args.report_only:
        run_bench(cfg, out)
    print(write_report(load_rows(out), out))


if __name__ == "__main__":
    main()
