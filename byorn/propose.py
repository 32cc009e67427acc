"""Replacements worth approving: k sampled candidates per flagged turn, ranked by the proposing model.

The audit proposes one greedy replacement from the *reference* model, which
does not know the downstream task.  After a run, the run's model (BYORn-F,
BYORn) does: :func:`propose_with_run` regenerates candidates for the flagged
turns with it, for the app's background job.

Each candidate is sampled from the model given the **original conversation
before that turn** (the original response is never shown), then scored by
the same model as that turn (mean NLL, nats/token, the audit's score: lower =
the model finds it more plausible).  Identical samples are merged (``count``
says how many of the k draws gave it) and candidates are sorted best first.
Replacement text only ever comes from a model (DESIGN.md section 1).
"""
from __future__ import annotations

import json
import logging
import os
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

from .data import Conversation, Turn, VLDataset, turn_key
from .models import VLM, ModelError

logger = logging.getLogger(__name__)

Key = tuple[str, int]  # (sample id, assistant turn)
Progress = Callable[[int, int], None]  # (done, total)


class RunNotReady(ValueError):
    """A run folder without a usable model (running, failed, cancelled before saving, not a run)."""


@dataclass
class Candidate:
    """One proposed replacement of an assistant turn."""

    text: str
    nll: float  # mean NLL (nats/token) of text as that turn under the proposing model; lower = more plausible
    count: int = 1  # how many of the k draws produced this text
    source: str | None = None  # "run:<folder>" or "reference:<model identity>" (Decision.source)


def reference_source(vlm: VLM) -> str:
    """The decision source label of a text proposed by ``vlm`` as the reference model."""
    return f"reference:{vlm.identity}"


def _prompts(dataset: VLDataset, keys: Sequence[Key]) -> list[Conversation]:
    """The original conversation before each turn (decoded one batch at a time by the caller)."""
    out = []
    for sid, turn in keys:
        sample = dataset.by_id(sid)
        if not 0 <= turn < sample.n_turns:
            raise ValueError(f"sample {sid!r} has {sample.n_turns} assistant turn(s); turn {turn} does not exist")
        out.append(sample.conversation().prompt_for(turn))
    return out


def _rank(texts: Iterable[str], nll_of: dict[str, float], source: str | None) -> list[Candidate]:
    counts: dict[str, int] = {}
    for t in texts:
        if t:
            counts[t] = counts.get(t, 0) + 1
    cands = [Candidate(t, nll_of[t], c, source) for t, c in counts.items()]
    return sorted(cands, key=lambda c: (c.nll, -c.count, c.text))


def propose_candidates(vlm: VLM, dataset: VLDataset, keys: Iterable, *, k: int = 4, temperature: float = 0.8,
                       top_p: float = 0.95, max_new_tokens: int = 32, seed: int = 0, batch_size: int = 64,
                       progress: Progress | None = None, cancel: threading.Event | None = None,
                       source: str | None = None) -> dict[Key, list[Candidate]]:
    """Up to ``k`` distinct sampled replacements per ``(sample id, turn)``, best (lowest NLL) first.

    ``keys``: ``(sample id, turn)`` pairs (a plain id means turn 0); the
    result is keyed by ``(id, turn)``.  ``batch_size`` counts generated
    sequences: ``batch_size // k`` prompts (at least 1) go into one
    ``generate`` call with all their k draws.  Batch ``b`` is sampled with
    seed ``seed + b``: the same call gives the same candidates.  Empty
    generations are dropped.  ``cancel`` (set from another thread) stops
    after the current batch and returns the turns done so far.
    """
    keys = list(dict.fromkeys(turn_key(key) for key in keys))  # unique, in order
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if temperature <= 0 and k > 1:
        raise ValueError(f"temperature must be > 0 to draw k={k} different candidates (0 = greedy: use k=1)")
    if batch_size < 1 or max_new_tokens < 1:
        raise ValueError(f"batch_size and max_new_tokens must be >= 1, got {batch_size} and {max_new_tokens}")
    per_batch = max(1, batch_size // k)
    out: dict[Key, list[Candidate]] = {}
    for b, start in enumerate(range(0, len(keys), per_batch)):
        if cancel is not None and cancel.is_set():
            logger.info("proposals cancelled after %d of %d turns", len(out), len(keys))
            break
        part = keys[start:start + per_batch]
        out.update(_propose_batch(vlm, dataset, part, k=k, temperature=temperature, top_p=top_p,
                                  max_new_tokens=max_new_tokens, seed=seed + b, source=source))
        if progress:
            progress(min(start + per_batch, len(keys)), len(keys))
    return out


def _propose_batch(vlm: VLM, dataset: VLDataset, part: Sequence[Key], *, k: int, temperature: float,
                   top_p: float, max_new_tokens: int, seed: int, source: str | None) -> dict[Key, list[Candidate]]:
    prompts = _prompts(dataset, part)
    repeated = [p for p in prompts for _ in range(k)]  # (B * k) prompts: prompt i's draws are rows i*k .. i*k+k-1
    texts = vlm.generate_conversations(repeated, max_new_tokens=max_new_tokens, temperature=temperature,
                                       top_p=top_p, seed=seed, batch_size=len(repeated))
    draws = [texts[i * k:(i + 1) * k] for i in range(len(part))]
    # score each distinct non-empty draw once, as the turn it would replace
    pairs = [(i, t) for i, ts in enumerate(draws) for t in dict.fromkeys(ts) if t]
    convs = [Conversation(prompts[i].turns + [Turn("assistant", t)], prompts[i].images) for i, t in pairs]
    scores = vlm.score_conversations(convs, batch_size=max(len(convs), 1)) if convs else []
    nll: list[dict[str, float]] = [{} for _ in part]
    for (i, t), s in zip(pairs, scores):
        nll[i][t] = s[part[i][1]].mean
    return {key: _rank(draws[i], nll[i], source) for i, key in enumerate(part)}


# ------------------------------------------------------------------------ runs --

def _run_alive(folder: Path) -> bool:
    """Whether the process named in the run's lock file is alive on this machine (the lock is not touched)."""
    try:
        words = (folder / "run.lock").read_text().split()
    except OSError:
        return False
    if len(words) < 4 or words[0] != "pid" or words[2] != "on" or words[3] != socket.gethostname():
        return False
    try:
        os.kill(int(words[1]), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


def run_model_folder(run_dir: str | Path) -> tuple[Path, str]:
    """The fine-tuned model folder of a run and its source label ``"run:<folder name>"``.

    Raises :class:`RunNotReady` naming the folder when the run has no usable
    model: not a run folder, still running, stopped before saving (failed,
    killed, cancelled early).  A cancelled run that saved its model so far is
    usable (logged).
    """
    folder = Path(run_dir)
    if not folder.is_dir():
        raise RunNotReady(f"run folder {folder} does not exist")
    cfg_path = folder / "config.json"
    if not cfg_path.exists():
        raise RunNotReady(f"{folder} is not a run folder (it has no config.json)")
    try:
        status = json.loads(cfg_path.read_text()).get("status", "finished")
    except (OSError, json.JSONDecodeError) as e:
        raise RunNotReady(f"the run's config {cfg_path} cannot be read: {e}") from None
    model = folder / "model"
    has_model = (model / "config.json").exists() and any(model.glob("*.safetensors"))
    if status == "running":
        if _run_alive(folder):
            raise RunNotReady(f"the run in {folder} is still running; propose with it once it has finished")
        raise RunNotReady(f"the run in {folder} stopped before it finished (failed or killed) and its model is "
                          f"not final; resume it (byorn train --resume {folder}) or choose another run")
    if not has_model:
        why = "was cancelled before it saved a model" if status == "cancelled" else "has no saved model (model/)"
        raise RunNotReady(f"the run in {folder} {why}; choose a finished run")
    if status == "cancelled":
        logger.warning("the run in %s was cancelled: proposing with the model it saved so far", folder)
    return model, f"run:{folder.name}"


def run_model(run_dir: str | Path) -> tuple[VLM, str]:
    """The fine-tuned model of a finished run and its source label ``"run:<folder name>"`` (see :func:`run_model_folder`)."""
    model, source = run_model_folder(run_dir)
    try:
        vlm = VLM.load(model)
    except ModelError as e:
        raise RunNotReady(f"the model of the run in {Path(run_dir)} cannot be loaded: {e}") from e
    vlm.name = f"run {Path(run_dir).name}"
    return vlm, source


ChunkRunner = Callable[..., dict]
"""``runner(model_folder, dataset, keys, **settings) -> {key: [Candidate]}``: runs one chunk elsewhere
(e.g. ``app.zerogpu.propose_on_gpu``, a ZeroGPU call); None = load the model here."""


def propose_with_run(run_dir: str | Path, dataset: VLDataset, keys: Iterable, *, k: int = 4,
                     progress: Progress | None = None, cancel: threading.Event | None = None,
                     chunk_size: int = 64, runner: ChunkRunner | None = None, vlm: VLM | None = None,
                     **settings) -> dict[Key, list[Candidate]]:
    """Candidates from a finished run's model for ``keys``, each with ``source="run:<folder>"``.

    For a background job: ``progress(done, total)`` after each chunk of
    ``chunk_size`` turns; ``cancel`` is checked between chunks (the turns
    done so far are returned).  ``settings`` go to :func:`propose_candidates`
    (temperature, top_p, max_new_tokens, seed, batch_size).  ``runner`` runs
    each chunk somewhere else (a GPU call) with the model folder; ``vlm``
    reuses a model already loaded from this run.  Chunk ``c`` is seeded
    ``seed + c * 100_003`` so a chunked job is reproducible.
    """
    model_folder, source = run_model_folder(run_dir)
    keys = list(dict.fromkeys(turn_key(key) for key in keys))
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if runner is None and vlm is None:
        vlm, _ = run_model(run_dir)
    seed = settings.pop("seed", 0)
    out: dict[Key, list[Candidate]] = {}
    for c, start in enumerate(range(0, len(keys), chunk_size)):
        if cancel is not None and cancel.is_set():
            logger.info("proposals with %s cancelled after %d of %d turns", source, len(out), len(keys))
            break
        part = keys[start:start + chunk_size]
        sub = dataset.subset(dict.fromkeys(sid for sid, _ in part))  # only what the chunk needs crosses to a worker
        kw = dict(settings, k=k, seed=seed + c * 100_003)
        got = runner(str(model_folder), sub, part, **kw) if runner is not None \
            else propose_candidates(vlm, sub, part, **kw)
        for key, cands in got.items():
            out[turn_key(key)] = [Candidate(x.text, x.nll, x.count, source) for x in cands]
        if progress:
            progress(min(start + chunk_size, len(keys)), len(keys))
    return out
