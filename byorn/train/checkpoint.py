"""Run folders and resumable checkpoints.

A run folder is **claimed** at start with an exclusive lock held for the
whole run (``run.lock``, ``fcntl.flock``): a second run into the same folder
is refused while the first is alive, and a folder that already holds a run
is refused unless the run is resumed.  A killed process releases its lock, so
``byorn train --resume RUN`` can take over.

A checkpoint (``checkpoint/``) holds everything a run needs to continue to
the same result as an uninterrupted run with the same seed: the trainable
weights, the EMA weights, the optimizer and scheduler state, the data-order
and sampling RNG states, the step and the position in the epoch, the loss
history and evaluations, and how many bootstrapped replacements were written.
Tensors go to safetensors, everything else to JSON: no pickles are ever
loaded.  A checkpoint is written to a temporary folder and renamed into place,
so a crash mid-write leaves the previous one intact.
"""
from __future__ import annotations

import base64
import fcntl
import json
import os
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

LOCK_NAME = "run.lock"
CHECKPOINT = "checkpoint"


class RunFolderError(FileExistsError):
    """A run folder that is in use or already holds a run."""


@dataclass
class RunClaim:
    """The held lock on a run folder; :meth:`release` when the run ends."""

    folder: Path
    fd: int

    def release(self) -> None:
        if self.fd >= 0:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = -1


def claim_run_folder(folder: str | Path, *, resume: bool = False) -> RunClaim:
    """Claim ``folder`` for one run (created if needed).

    Raises :class:`RunFolderError` when another live run holds it, or when it
    already holds a run (or other files) and ``resume`` is off.
    """
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    fd = os.open(out / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        holder = (out / LOCK_NAME).read_text(errors="replace").strip() or "another process"
        raise RunFolderError(f"{out} is in use by a running training run ({holder}); wait for it, "
                             "cancel it, or choose another output folder") from None
    others = [p.name for p in out.iterdir() if p.name != LOCK_NAME]
    if others and not resume:
        os.close(fd)
        what = "holds a run already" if (out / "config.json").exists() else f"is not empty ({others[0]} ...)"
        raise RunFolderError(f"{out} {what}; choose another output folder, or continue that run "
                             f"with --resume {out}")
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%dT%H:%M:%S')}\n".encode())
    return RunClaim(out, fd)


# ------------------------------------------------------------------ checkpoints --

def save_checkpoint(folder: Path, *, trainable: dict[str, torch.Tensor], ema: dict[str, torch.Tensor] | None,
                    optimizer: dict, scheduler: dict, state: dict[str, Any]) -> Path:
    """Write ``folder/checkpoint`` atomically (temporary folder, then rename)."""
    final = folder / CHECKPOINT
    tmp = folder / f".{CHECKPOINT}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in trainable.items()}, str(tmp / "trainable.safetensors"))
    if ema is not None:
        save_file(ema, str(tmp / "ema.safetensors"))
    opt_tensors, opt_meta = _flatten_optimizer(optimizer)
    save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
    (tmp / "optimizer.json").write_text(json.dumps(opt_meta))
    (tmp / "scheduler.json").write_text(json.dumps(scheduler))
    (tmp / "state.json").write_text(json.dumps(state, default=float))
    old = folder / f".{CHECKPOINT}.old"
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(folder: Path) -> dict[str, Any]:
    """Read ``folder/checkpoint`` back: ``trainable``, ``ema``, ``optimizer``, ``scheduler``, ``state``."""
    ck = folder / CHECKPOINT
    if not (ck / "state.json").exists():
        old = folder / f".{CHECKPOINT}.old"  # killed between the two renames
        if (old / "state.json").exists():
            ck = old
        else:
            raise FileNotFoundError(f"{folder} holds no checkpoint to resume from (no {CHECKPOINT}/state.json); "
                                    "it was stopped before its first checkpoint: start it again")
    ema_path = ck / "ema.safetensors"
    return {
        "trainable": load_file(str(ck / "trainable.safetensors")),
        "ema": load_file(str(ema_path)) if ema_path.exists() else None,
        "optimizer": _unflatten_optimizer(load_file(str(ck / "optimizer.safetensors")),
                                          json.loads((ck / "optimizer.json").read_text())),
        "scheduler": json.loads((ck / "scheduler.json").read_text()),
        "state": json.loads((ck / "state.json").read_text()),
    }


def _flatten_optimizer(sd: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, meta_state = {}, {}
    for pid, st in sd["state"].items():
        meta_state[str(pid)] = {}
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{pid}.{k}"] = v.detach().cpu().contiguous()
            else:
                meta_state[str(pid)][k] = v
    return tensors, {"param_groups": sd["param_groups"], "state": meta_state}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {int(pid): dict(v) for pid, v in meta["state"].items()}
    for key, t in tensors.items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = t
    return {"state": state, "param_groups": meta["param_groups"]}


# ------------------------------------------------------------------- RNG states --

def rng_state(np_rng, py_random) -> dict[str, Any]:
    """JSON-serialisable states of the data-order generator, Python's and torch's RNG."""
    py = py_random.getstate()
    return {"numpy": np_rng.bit_generator.state, "python": [py[0], list(py[1]), py[2]],
            "torch": base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode()}


def restore_rng(state: dict[str, Any], np_rng, py_random) -> None:
    import numpy as np

    np_rng.bit_generator.state = state["numpy"]
    py = state["python"]
    py_random.setstate((py[0], tuple(py[1]), py[2]))
    raw = np.frombuffer(base64.b64decode(state["torch"]), dtype=np.uint8).copy()
    torch.set_rng_state(torch.from_numpy(raw))
