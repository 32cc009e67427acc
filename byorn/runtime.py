"""The process group: one process, or several under ``accelerate launch``.

On a machine without CUDA, ``accelerate``'s state must be created with
``cpu=True`` or several launched processes each believe they are alone.
(``accelerate launch --cpu --num_processes N`` starts a single process unless
``mpirun`` is configured; ``accelerate launch --multi_gpu --num_processes N``
starts N processes through torchrun, which then use gloo on the CPU.)
"""
from __future__ import annotations


def process_state():
    """``accelerate.PartialState`` of this process (created once, CPU-aware)."""
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())
