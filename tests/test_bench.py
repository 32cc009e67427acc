"""How bench rows are named: the paper's BYORn stays ``byorn``; other scores and splits get their own rows."""
import pytest

from byorn.bench import BenchConfig, _wall_ratios, default_label, defense_label


def test_labels_keep_the_papers_rows_apart_from_other_settings():
    assert defense_label("byorn") == defense_label("byorn", "mean", 0.6) == "byorn"
    assert defense_label("byorn", "grounding") == "byorn@grounding"          # the matrix's rows keep their names
    assert defense_label("byorn", "mean+grounding", "auto") == "byorn@mean+grounding@auto"
    assert defense_label("byorn-f", "mean", "auto") == "byorn-f@auto"
    assert defense_label("byorn", "mean", 0.8) == "byorn@p0.8"
    assert defense_label("sft", "grounding", "auto") == "sft"                   # reads no flags
    quick = BenchConfig.quick()
    assert (quick.score, quick.p) == ("mean+grounding", "auto")             # the library's default
    assert quick.label("byorn") == default_label() and quick.label("sft") == "sft"
    assert BenchConfig(score="mean", p="0.6").label("byorn") == "byorn"     # p as the command line gives it
    with pytest.raises(ValueError, match="p must be"):
        BenchConfig(p=1.5)


def test_wall_ratios_per_byorn_variant():
    rows = [{"scenario": "a", "rate": 0.1, "seed": 0, "defense": d, "wall_s": w}
            for d, w in (("sft", 100.0), ("byorn", 130.0), ("byorn@mean+grounding@auto", 115.0), ("byorn-f", 90.0))]
    rows.append({"scenario": "b", "rate": 0.1, "seed": 0, "defense": "byorn", "wall_s": 50.0})  # no SFT beside it
    assert _wall_ratios(rows) == {"byorn": [1.3], "byorn@mean+grounding@auto": [1.15]}


def test_bench_command_line_takes_the_split():
    from byorn.cli import build_parser

    a = build_parser().parse_args(["bench", "--p", "0.6", "--score", "mean", "--out", "x"])
    assert (a.p, a.score) == (0.6, "mean")
    assert build_parser().parse_args(["bench", "--p", "auto", "--out", "x"]).p == "auto"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["bench", "--p", "2", "--out", "x"])
