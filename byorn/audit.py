"""The audit: score every assistant turn under the reference model, split, propose, map.

:func:`run_audit` produces the audit table (columns in ``docs/architecture.md``)
that every view of the app and the trainer read: **one row per assistant
turn** (single-turn data: one row per sample).  Each turn is scored given the
whole conversation before it (one forward pass scores every turn of a
sample); ``sample_score`` is the sample's most suspicious turn score, with
``sample_turn`` its index; the p-split is over turns.

It streams: samples are scored in shards of ``shard_size`` (images decoded
and batches encoded in ``DataLoader`` workers), each finished shard is
written to the work folder, so an interrupted audit of a large set continues
from its last finished shard, and under ``accelerate launch`` each process
scores its share of the shards and the main process assembles one table.
Invalid samples (a corrupt image, a conversation longer than the model's
context) stop the audit with a clear error, or with ``skip_invalid`` are left
out and listed in ``meta["skipped"]``.  Results are cached by dataset
fingerprint, model identity and the settings that change them.
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import pandas as pd

from .batching import token_chunks
from .data import Conversation, DataError, VLDataset, turn_key
from .maps import FIT_MAX, MAP_KINDS, compute_maps
from .models import VLM
from .scoring import DEFAULT_SCORE, GROUNDED_METHODS, SCORE_METHODS, aggregate, blank_image, components, grounded_score
from .split import DEFAULT_P, PAPER_P, Components, Split, parse_p

logger = logging.getLogger(__name__)

Progress = Callable[[float, str], None]  # (fraction done in [0, 1], message)

COLUMNS = [
    "key", "id", "turn", "n_turns", "instruction", "response", "score", "score_max", "sample_score",
    "sample_turn", "n_tokens", "tokens", "surprisals", "suspicious", "proposed_response",
    "umap_response_x", "umap_response_y", "umap_image_x", "umap_image_y",
    "umap_joint_x", "umap_joint_y", "gt_poisoned",
]
GROUNDING_COLUMNS = ["grounding", "surprisals_blank"]  # only in audits with a blank-image pass
EMBED_DIM = 256  # embeddings are projected to at most this many dimensions (seeded, JL-style)


@dataclass
class AuditConfig:
    """How to audit a dataset."""

    p: float | str = field(default=DEFAULT_P, metadata={
        "help": "the split: 'auto' (a threshold read off the score distribution: a gap above the bulk of "
                "scores, else at least the top 40 %%) or a percentile (turns above the p-quantile are "
                "suspicious; the paper: 0.6)"})
    threshold: float | None = field(default=None, metadata={
        "help": "split at this score value instead (turns scoring above it are suspicious; overrides p)"})
    score: str = field(default=DEFAULT_SCORE, metadata={
        "help": f"score aggregate, one of {SCORE_METHODS} (the paper: mean)"})
    grounding: bool = field(default=False, metadata={
        "help": "also score every turn with blank images (column surprisals_blank), as the grounding scores "
                "need; implied by them; doubles the scoring time"})
    topk: int = field(default=3, metadata={"help": "k for the topk score"})
    batch_size: int = field(default=64, metadata={"help": "scoring / generation batch size"})
    max_batch_tokens: int | None = field(default=32_768, metadata={
        "help": "split batches whose padded tokens (B x T) exceed this (memory bound)"})
    max_length: int | None = field(default=None, metadata={
        "help": "token cap per conversation (default: the model's context length)"})
    skip_invalid: bool = field(default=False, metadata={
        "help": "leave out (and list) samples whose image cannot be read or that are too long"})
    too_long: str = field(default="error", metadata={
        "help": "over-long conversations: error (or skipped with skip_invalid), skip, or truncate at a "
                "turn boundary (the turns that fit are scored; reported in meta['truncated'])"})
    propose: bool = field(default=True, metadata={"help": "generate a replacement for each flagged turn"})
    max_new_tokens: int = field(default=32, metadata={"help": "length cap of proposed replacements"})
    temperature: float = field(default=0.0, metadata={"help": "proposal sampling temperature (0 = greedy)"})
    maps: bool = field(default=True, metadata={"help": "compute 2-D UMAP maps of the embeddings"})
    map_fit_max: int = field(default=FIT_MAX, metadata={
        "help": "fit UMAP on at most this many turns and place the rest with its transform"})
    shard_size: int = field(default=4096, metadata={"help": "samples per resumable shard"})
    num_workers: int = field(default=0, metadata={"help": "DataLoader workers decoding and encoding batches"})
    seed: int = field(default=0, metadata={"help": "seed for proposals and UMAP"})

    def __post_init__(self) -> None:
        self.p = parse_p(self.p)
        self.split_spec  # noqa: B018  (raises on a threshold that is not a finite number)
        if self.score not in SCORE_METHODS:
            raise ValueError(f"score must be one of {SCORE_METHODS}, got {self.score!r}")
        for name in ("batch_size", "max_new_tokens", "topk", "shard_size", "map_fit_max"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.too_long not in ("error", "skip", "truncate"):
            raise ValueError(f"too_long must be error, skip or truncate, got {self.too_long!r}")
        if self.num_workers < 0 or self.temperature < 0:
            raise ValueError("num_workers and temperature must be >= 0")
        for name in ("max_batch_tokens", "max_length"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1 or unset, got {getattr(self, name)}")

    @property
    def split_spec(self) -> Split:
        """The split this config asks for (not applied yet)."""
        return Split.of(self.p, self.threshold)

    @property
    def blank_pass(self) -> bool:
        """Whether every turn is also scored with its images blanked."""
        return self.grounding or self.score in GROUNDED_METHODS

    def cache_fields(self) -> dict:
        """The settings that change the audit's content (not how it is computed)."""
        skip = {"batch_size", "max_batch_tokens", "num_workers", "shard_size"}
        return {k: v for k, v in asdict(self).items() if k not in skip}


@dataclass
class Audit:
    """The audit table and its metadata (threshold, fingerprint, model, config, skipped samples)."""

    table: pd.DataFrame
    meta: dict
    source: str | None = None  # the folder it was loaded from
    #: per-row embeddings ``{"response": (N, D), "image": (N, D)}`` (float32, rows as in ``table``),
    #: kept for nearest-neighbour search; None when the audit computed no maps
    embeddings: dict[str, np.ndarray] | None = None

    def save(self, out_dir: str | Path) -> Path:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        tmp = out / ".audit.parquet.tmp"
        self.table.to_parquet(tmp, index=False)
        tmp.replace(out / "audit.parquet")
        if self.embeddings:
            with open(out / ".embeddings.npz.tmp", "wb") as f:
                np.savez(f, **self.embeddings)
            (out / ".embeddings.npz.tmp").replace(out / "embeddings.npz")
        (out / "audit.json").write_text(json.dumps(self.meta, indent=2, default=str))
        return out

    def joint_embeddings(self) -> np.ndarray | None:
        """(N, 2D) unit-normalised response and image embeddings side by side (None without maps)."""
        if not self.embeddings:
            return None
        parts = [self.embeddings[k] / np.clip(np.linalg.norm(self.embeddings[k], axis=1, keepdims=True), 1e-8, None)
                 for k in ("response", "image")]
        return np.concatenate(parts, axis=1)

    @classmethod
    def load(cls, folder: str | Path) -> "Audit":
        folder = Path(folder)
        table_path = folder / "audit.parquet"
        if not table_path.exists():
            raise FileNotFoundError(f"{folder} holds no audit.parquet: not an audit folder")
        table = pd.read_parquet(table_path)
        for col in ("tokens", "surprisals", "surprisals_blank"):
            if col in table.columns:
                table[col] = table[col].map(list)
        table = _with_turn_columns(table)
        meta = json.loads((folder / "audit.json").read_text()) if (folder / "audit.json").exists() else {}
        emb = None
        if (folder / "embeddings.npz").exists():
            with np.load(folder / "embeddings.npz") as z:
                emb = {k: z[k] for k in z.files}
        return cls(table, meta, str(folder), emb)

    @property
    def threshold(self) -> float:
        return float(self.meta["threshold"])

    @property
    def split_info(self) -> Split:
        """The split this audit's flags come from (audits older than the record: read from p and threshold)."""
        if self.meta.get("split"):
            return Split.from_dict(self.meta["split"])
        flags = self.table["suspicious"].astype(bool)
        return Split("percentile", p=float(self.meta.get("p", PAPER_P)), threshold=self.threshold,
                     n_flagged=int(flags.sum()), n=len(flags))

    @property
    def score_method(self) -> str:
        """The score this audit ranks turns by (``mean`` for audits older than the record)."""
        return score_method_of(self.meta)

    def split(self, split: Split | None = None, *, percentile: float | str | None = None,
              threshold: float | None = None) -> "Audit":
        """A new audit of the same scores re-split (by a :class:`Split`, a percentile or ``"auto"``, or a
        score value), with its flags, threshold and ``meta["split"]`` consistent.  This audit is unchanged;
        the table and embeddings are shared where they do not change."""
        if split is None:
            if percentile is None and threshold is None:
                raise ValueError("give a split, a percentile (or 'auto') or a threshold")
            split = Split.of(percentile, threshold)
        table, done = _resplit(self.table, split, score_components(self.table, self.score_method))
        meta = {**self.meta, **_split_meta(table, done)}
        if isinstance(meta.get("config"), dict):  # the config says how this audit is split now
            meta["config"] = {**meta["config"], "p": meta["p"] if done.kind != "value" else meta["config"].get("p"),
                              "threshold": done.value}
        return Audit(table, meta, self.source, self.embeddings)

    def flags(self) -> dict[tuple[str, int], bool]:
        """Suspicious flag per (sample id, turn)."""
        t = self.table
        return dict(zip(zip(t["id"], t["turn"].astype(int)), t["suspicious"].astype(bool)))


def _with_turn_columns(table: pd.DataFrame) -> pd.DataFrame:
    """Audits written before conversations had one row per sample: read them as turn 0."""
    if "turn" not in table.columns:
        table = table.assign(key=table["id"], turn=0, n_turns=1, sample_score=table["score"], sample_turn=0,
                             n_tokens=table["tokens"].map(len))
    return table


def apply_threshold(table: pd.DataFrame, *, percentile: float | str | None = None,
                    value: float | None = None, score: str = "mean") -> tuple[pd.DataFrame, float]:
    """A copy of ``table`` re-split at a percentile (or ``"auto"``) or an absolute score (``score``: the
    method its ``score`` column holds, which the adaptive split of ``mean+grounding`` needs)."""
    if (percentile is None) == (value is None):
        raise ValueError("give exactly one of percentile or value")
    out, split = _resplit(table, Split.of(percentile, value), score_components(table, score))
    return out, float(split.threshold)


def score_method_of(meta: dict) -> str:
    """The score an audit's metadata say it ranks turns by (``mean`` for audits older than the record)."""
    return str((meta.get("config") or {}).get("score", "mean"))


def score_components(table: pd.DataFrame, score: str) -> Components | None:
    """The parts of the ``mean+grounding`` score of an audit table (None for any other score)."""
    if score != "mean+grounding" or "surprisals_blank" not in table.columns:
        return None
    return components(table["surprisals"].map(list).tolist(), table["surprisals_blank"].map(list).tolist(),
                      responses=table["response"].astype(str).tolist() if "response" in table.columns else None,
                      tokens=table["tokens"].map(list).tolist() if "tokens" in table.columns else None)


def _resplit(table: pd.DataFrame, split: Split, parts: Components | None = None) -> tuple[pd.DataFrame, Split]:
    out = table.copy()
    mask, done = split.spec.apply(out["score"].to_numpy(dtype=float), parts)
    out["suspicious"] = mask
    return out, done


def _split_meta(table: pd.DataFrame, split: Split) -> dict:
    """The audit metadata that follow from its split."""
    flags = table["suspicious"].to_numpy(dtype=bool)
    return {"threshold": split.threshold, "p": split.p if split.kind == "percentile" else split.kind,
            "split": split.to_dict(), "n_suspicious": int(flags.sum()),
            "n_samples_suspicious": int(table.loc[flags, "id"].nunique())}


# --------------------------------------------------------------------- proposals --

def propose_replacements(vlm: VLM, dataset: VLDataset, keys: Iterable, *,
                         max_new_tokens: int = 32, temperature: float = 0.7, top_p: float = 0.9,
                         seed: int = 0, batch_size: int = 64,
                         progress: Callable[[int, int], None] | None = None) -> dict:
    """Replacement responses generated by ``vlm`` for the given turns.

    ``keys`` are ``(sample id, turn)`` pairs or plain sample ids (turn 0); the
    result is keyed the same way.  Each turn is generated from the original
    conversation before it: the original response is never shown to the model.
    """
    keys = list(keys)
    out: dict = {}
    for start in range(0, len(keys), batch_size):  # decode the images of one batch at a time
        part = keys[start:start + batch_size]
        prompts = []
        for key in part:
            sid, turn = turn_key(key)
            prompts.append(dataset.by_id(sid).conversation().prompt_for(turn))
        texts = vlm.generate_conversations(prompts, max_new_tokens=max_new_tokens, temperature=temperature,
                                           top_p=top_p, seed=seed + start, batch_size=batch_size)
        out.update(zip(part, texts))
        if progress:
            progress(min(start + batch_size, len(keys)), len(keys))
    return out


# ------------------------------------------------------------------------ scoring --

def cache_key(dataset: VLDataset, vlm: VLM, cfg: AuditConfig) -> str:
    h = hashlib.sha256(json.dumps([dataset.fingerprint(), vlm.identity, cfg.cache_fields()],
                                  sort_keys=True, default=str).encode())
    return h.hexdigest()[:20]


class _EncodeBatch:
    """DataLoader collate: sample indices -> (encoded chunks, skipped {id: reason}, truncated {id: turns kept}).

    Decoding and encoding happen here, in the workers; a sample whose image
    cannot be read or that is too long is dropped with its reason (the caller
    decides whether that is an error).
    """

    def __init__(self, dataset: VLDataset, vlm: VLM, cfg: AuditConfig):
        self.dataset, self.vlm, self.cfg = dataset, vlm, cfg

    def __call__(self, indices: list[int]):
        from .models.adapter import SequenceTooLong

        samples, convs, skipped, truncated = [], [], {}, {}
        for i in indices:
            s = self.dataset[i]
            try:
                convs.append(s.conversation())
                samples.append(s)
            except DataError as e:
                skipped[s.id] = str(e)
        batch = None
        while samples:
            try:
                batch = self.vlm.encode(convs, max_length=self.cfg.max_length)
                break
            except SequenceTooLong as e:
                sid = samples[e.index].id
                cut = convs[e.index].without_last_exchange() if self.cfg.too_long == "truncate" else None
                if cut is not None:
                    convs[e.index] = cut
                    truncated[sid] = len(cut.assistant_positions())
                    continue
                truncated.pop(sid, None)
                skipped[sid] = str(DataError(f"{e.length} tokens, above the limit of {e.limit} (raise max_length, "
                                             "shorten it, or truncate with too_long=truncate)",
                                             sample_id=sid, field="turns"))
                del samples[e.index], convs[e.index]
        if batch is None:
            return [], skipped, truncated
        groups = token_chunks(batch.lengths, self.cfg.max_batch_tokens)
        if len(groups) == 1:
            return [(samples, batch, self._blank(convs))], skipped, truncated
        return [([samples[j] for j in g], self.vlm.encode([convs[j] for j in g], max_length=self.cfg.max_length),
                 self._blank([convs[j] for j in g])) for g in groups], skipped, truncated

    def _blank(self, convs: list[Conversation]):
        """The conversations that have an image, with every image blanked, encoded, and their positions in
        ``convs``: ``(batch or None, positions)``; None unless the config asks for the blank pass.  One without
        an image would score the same twice: it is not encoded again (:func:`_blank_scores`)."""
        if not self.cfg.blank_pass:
            return None
        where = [j for j, c in enumerate(convs) if c.images]
        if not where:
            return None, []
        return self.vlm.encode([Conversation(convs[j].turns, [blank_image(im) for im in convs[j].images])
                                for j in where], max_length=self.cfg.max_length), where


def _score_shard(dataset: VLDataset, indices: list[int], vlm: VLM, cfg: AuditConfig, proj: np.ndarray | None,
                 report: Callable[[int], None]) -> tuple[pd.DataFrame, dict, dict, dict]:
    """Score the samples ``indices``: (rows, {"response", "image"} embeddings, skipped, truncated)."""
    import torch

    rows, emb_r, emb_i, skipped, truncated = [], [], [], {}, {}
    batches = [indices[k:k + cfg.batch_size] for k in range(0, len(indices), cfg.batch_size)]
    loader = torch.utils.data.DataLoader(
        range(len(dataset)), batch_sampler=batches, collate_fn=_EncodeBatch(dataset, vlm, cfg),
        num_workers=cfg.num_workers, prefetch_factor=2 if cfg.num_workers else None)
    for chunks, skip, cut in loader:
        skipped.update(skip)
        truncated.update(cut)
        for samples, batch, blank in chunks:
            out = vlm.score_batch(batch, embed=cfg.maps)
            scores, emb = out if cfg.maps else (out, None)
            blank_scores = _blank_scores(vlm, blank, scores)
            for s, turn_scores, turn_blank in zip(samples, scores, blank_scores):  # truncated: fewer turns
                rows.extend(_row(s, k, ts, turn_blank[k] if turn_blank is not None else None)
                            for k, ts in enumerate(turn_scores))
            if cfg.maps:
                emb_r.append(emb["response"] @ proj if proj is not None else emb["response"])
                emb_i.append(emb["image"] @ proj if proj is not None else emb["image"])
            report(len(samples))
    # token-bounded chunks group samples by length: put rows (and embeddings) back in dataset order
    order = sorted(range(len(rows)), key=lambda r: (dataset.index_of(rows[r]["id"]), rows[r]["turn"]))
    rows = [rows[r] for r in order]
    emb = {"response": np.concatenate(emb_r).astype(np.float32)[order],
           "image": np.concatenate(emb_i).astype(np.float32)[order]} if emb_r else {}
    return pd.DataFrame(rows), emb, skipped, truncated


def _blank_scores(vlm: VLM, blank, scores: list) -> list:
    """Each sample's turn scores with its images blanked: scored where it has an image, and its own scores
    where it has none (blanking would change nothing); ``None`` each without a blank pass."""
    if blank is None:
        return [None] * len(scores)
    batch, where = blank
    out = list(scores)
    for j, blank_scores in zip(where, vlm.score_batch(batch) if where else []):
        out[j] = blank_scores
    return out


def _row(sample, k: int, ts, blank=None) -> dict:
    row = {"id": sample.id, "turn": k, "n_turns": sample.n_turns, "instruction": sample.user_text_before(k),
           "response": sample.assistant_texts()[k], "n_tokens": len(ts.tokens), "tokens": list(ts.tokens),
           "surprisals": [float(x) for x in ts.surprisals]}
    if blank is not None:
        row["surprisals_blank"] = [float(x) for x in blank.surprisals]
    return row


class _Shards:
    """Finished shards: in a work folder (resumable, shared by processes) or in memory."""

    def __init__(self, folder: Path | None):
        self.folder, self.mem = folder, {}
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)

    def done(self, s: int) -> bool:
        return s in self.mem or (self.folder is not None and (self.folder / f"shard-{s:05d}.json").exists())

    def put(self, s: int, rows: pd.DataFrame, emb: dict, skipped: dict, truncated: dict) -> None:
        if self.folder is None:
            self.mem[s] = (rows, emb, skipped, truncated)
            return
        base = self.folder / f"shard-{s:05d}"
        rows.to_parquet(f"{base}.parquet", index=False)
        if emb:
            np.savez(f"{base}.npz", **emb)
        # the .json marker is written last: a shard without it is redone
        Path(f"{base}.json").write_text(json.dumps({"skipped": skipped, "truncated": truncated,
                                                    "n_rows": len(rows)}))

    def get(self, s: int) -> tuple[pd.DataFrame, dict, dict, dict]:
        if s in self.mem:
            return self.mem[s]
        base = self.folder / f"shard-{s:05d}"
        info = json.loads(Path(f"{base}.json").read_text())
        rows = pd.read_parquet(f"{base}.parquet") if info["n_rows"] else pd.DataFrame()
        emb = dict(np.load(f"{base}.npz")) if Path(f"{base}.npz").exists() else {}
        return rows, emb, info["skipped"], info["truncated"]


def run_audit(dataset: VLDataset, vlm: VLM, cfg: AuditConfig | None = None, *,
              ground_truth: dict[str, bool] | None = None, cache_dir: str | Path | None = None,
              work_dir: str | Path | None = None, progress: Progress | None = None) -> Audit:
    """Score, split, propose and map every assistant turn of ``dataset``.

    ``work_dir`` keeps finished shards (an interrupted audit resumes there;
    needed when several processes share the work); with ``cache_dir`` the
    result is cached and the shards live under it.  ``ground_truth``
    (id -> poisoned) only fills the ``gt_poisoned`` column for evaluation and
    display; the split never reads it.
    """
    from .runtime import process_state

    cfg = cfg or AuditConfig()
    report = progress or (lambda f, m: None)
    key = cache_key(dataset, vlm, cfg)
    cached = Path(cache_dir) / key if cache_dir is not None else None
    if cached is not None and (cached / "audit.parquet").exists():
        logger.info("audit cache hit: %s", cached)
        report(1.0, "loaded from cache")
        return with_ground_truth(Audit.load(cached), ground_truth)
    state = process_state()
    work = Path(work_dir) if work_dir is not None else (cached / ".shards" if cached is not None else None)
    if state.num_processes > 1 and work is None:
        raise ValueError("several processes need a shared work_dir for the audit's shards")
    if work is not None and (work / "key.txt").exists() and (work / "key.txt").read_text() != key:
        shutil.rmtree(work)  # shards of another dataset, model or config: start over
    shards = _Shards(work)
    if work is not None and state.is_main_process:
        (work / "key.txt").write_text(key)
    t0 = time.time()
    _score_all(dataset, vlm, cfg, shards, state, report)
    state.wait_for_everyone()
    if not state.is_main_process:
        return None  # type: ignore[return-value]  (the main process assembles and returns the audit)
    audit = _assemble(dataset, vlm, cfg, shards, t0, report)
    audit.meta["cache_key"] = key
    if cached is not None:
        audit.save(cached)
    if work is not None and work_dir is None:
        shutil.rmtree(work, ignore_errors=True)
    report(1.0, "done")
    return with_ground_truth(audit, ground_truth)


def _score_all(dataset, vlm, cfg: AuditConfig, shards: _Shards, state, report: Progress) -> None:
    n = len(dataset)
    n_shards = max(1, -(-n // cfg.shard_size))
    proj = _projection(vlm, cfg.seed)
    mine = [s for s in range(n_shards) if s % state.num_processes == state.process_index]
    done = sum(min(cfg.shard_size, n - s * cfg.shard_size) for s in mine if shards.done(s))
    total = sum(min(cfg.shard_size, n - s * cfg.shard_size) for s in mine)
    for s in mine:
        if shards.done(s):
            continue
        idx = list(range(s * cfg.shard_size, min(n, (s + 1) * cfg.shard_size)))

        def tick(k: int) -> None:
            nonlocal done
            done += k
            report(0.6 * done / max(total, 1), f"scoring {done}/{total}")

        rows, emb, skipped, truncated = _score_shard(dataset, idx, vlm, cfg, proj, tick)
        if skipped and not (cfg.skip_invalid or cfg.too_long == "skip"):
            sid, why = next(iter(skipped.items()))
            err = DataError(f"{why} ({len(skipped)} invalid in this shard; pass --skip-invalid to leave "
                            "invalid samples out and list them)")
            err.sample_id = sid
            raise err
        shards.put(s, rows, emb, skipped, truncated)


def _projection(vlm: VLM, seed: int) -> np.ndarray | None:
    """A fixed random projection of hidden states to :data:`EMBED_DIM` dims (None if already small)."""
    cfg = vlm.model.config
    hidden = getattr(cfg.get_text_config(), "hidden_size", None) if hasattr(cfg, "get_text_config") else None
    if hidden is None or hidden <= EMBED_DIM:
        return None
    rng = np.random.default_rng([seed, 7])
    return (rng.standard_normal((hidden, EMBED_DIM)) / np.sqrt(EMBED_DIM)).astype(np.float32)


def _assemble(dataset, vlm, cfg: AuditConfig, shards: _Shards, t0: float, report: Progress) -> Audit:
    n_shards = max(1, -(-len(dataset) // cfg.shard_size))
    parts = [shards.get(s) for s in range(n_shards)]
    frames = [p[0] for p in parts if len(p[0])]
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    skipped = {k: v for p in parts for k, v in p[2].items()}
    truncated = {k: v for p in parts for k, v in p[3].items()}
    if table.empty:
        raise DataError(f"no sample could be scored ({len(skipped)} invalid); first: "
                        f"{next(iter(skipped.values()), '')}")
    surprisals = table["surprisals"].map(list).tolist()
    blank = table["surprisals_blank"].map(list).tolist() if "surprisals_blank" in table.columns else None
    score_parts = score_components(table, cfg.score)
    table["score"] = (grounded_score(score_parts)[0] if score_parts is not None
                      else aggregate(surprisals, cfg.score, cfg.topk, blank=blank))
    if blank is not None:
        table["grounding"] = (score_parts.grounding if score_parts is not None
                              else aggregate(surprisals, "grounding", blank=blank))
    table["score_max"] = aggregate(surprisals, "max")
    best = table.groupby("id", sort=False)["score"].transform("max")
    table["sample_score"] = best
    idx_best = table.loc[table.groupby("id", sort=False)["score"].idxmax(), ["id", "turn"]]
    table["sample_turn"] = table["id"].map(dict(zip(idx_best["id"], idx_best["turn"]))).astype(int)
    table["key"] = _row_keys(table)
    flags, split = cfg.split_spec.apply(table["score"].to_numpy(dtype=float), score_parts)
    table["suspicious"] = flags
    logger.info("split %s", split.describe())
    t_score = time.time() - t0
    table["proposed_response"] = ""
    if cfg.propose and flags.any():
        keys = list(zip(table.loc[flags, "id"], table.loc[flags, "turn"].astype(int)))
        proposals = propose_replacements(
            vlm, dataset, keys, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, seed=cfg.seed,
            batch_size=cfg.batch_size, progress=lambda d, n: report(0.6 + 0.25 * d / n, f"proposing {d}/{n}"))
        table.loc[flags, "proposed_response"] = [proposals[k] for k in keys]
    t_propose = time.time() - t0 - t_score
    map_info, embeddings = _add_maps(table, parts, cfg, report)
    meta = {
        **_split_meta(table, split), "n": len(dataset), "n_turns": len(table),
        "dataset_fingerprint": dataset.fingerprint(), "dataset_name": dataset.name,
        "model_identity": vlm.identity, "model_name": vlm.name, "config": asdict(cfg),
        "model_warnings": list(getattr(vlm, "warnings", [])),  # e.g. a stop token that could not be determined
        "skipped": skipped, "truncated": truncated, "maps": map_info,
        "timings_s": {"score": round(t_score, 2), "propose": round(t_propose, 2),
                      "total": round(time.time() - t0, 2)},
    }
    return Audit(table, meta, embeddings=embeddings)


def _row_keys(table: pd.DataFrame) -> list[str]:
    """A unique string per row: the sample id for one-turn samples, ``id#turn`` otherwise."""
    keys = [i if n == 1 else f"{i}#{k}" for i, k, n in zip(table["id"], table["turn"], table["n_turns"])]
    seen: set[str] = set()
    out = []
    for k in keys:
        while k in seen:  # an id that itself looks like "x#1" next to sample "x": keep keys unique
            k += "~"
        seen.add(k)
        out.append(k)
    return out


def _add_maps(table: pd.DataFrame, parts, cfg: AuditConfig, report: Progress) -> tuple[dict | None, dict | None]:
    embs = [p[1] for p in parts if p[1]]
    if not cfg.maps or not embs:
        for kind in MAP_KINDS:
            table[f"umap_{kind}_x"] = np.nan
            table[f"umap_{kind}_y"] = np.nan
        return None, None
    emb = {k: np.concatenate([e[k] for e in embs]) for k in ("response", "image")}
    report(0.85, "computing the 2-D maps (UMAP)")
    coords, info = compute_maps(emb, cfg.seed, fit_max=cfg.map_fit_max)
    for kind in MAP_KINDS:
        table[f"umap_{kind}_x"] = coords[kind][:, 0]
        table[f"umap_{kind}_y"] = coords[kind][:, 1]
    return info, emb


def with_ground_truth(audit: Audit, ground_truth: dict[str, bool] | None) -> Audit:
    """Fill ``gt_poisoned`` (NA where unknown) and put the columns in order.

    Ground truth is per sample (a poisoned sample's every row is marked).
    """
    table = audit.table
    if ground_truth is None:
        table["gt_poisoned"] = pd.array([pd.NA] * len(table), dtype="boolean")
    else:
        table["gt_poisoned"] = pd.array([ground_truth.get(i) for i in table["id"]], dtype="boolean")
    audit.table = table[COLUMNS + [c for c in GROUNDING_COLUMNS if c in table.columns]]
    return audit
