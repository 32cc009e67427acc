"""One visitor's place in the lesson, kept in ``gr.State`` (each browser session its own copy)."""
from __future__ import annotations

from dataclasses import dataclass, field

N_STEPS = 6


@dataclass
class LessonView:
    """Where this visitor is and what they chose; nothing here is shared with anyone else."""

    step: int = 1
    attack: dict = field(default_factory=dict)   # LessonAttack.to_dict() of step 1's choice ({} = the shipped one)
    run_id: str | None = None                    # their live run in the queue (a secret only this session holds)
    own_folder: str | None = None                # their finished lesson folder: steps 2-5 show it
    use_own: bool = False                        # show their own run (True) or the shipped models
    pick: int = 0                                # the playground's test image
    upload: object | None = None                 # their uploaded image, resized to the model input (PIL)
    trigger: bool = True                         # the playground's trigger switch
    p: int = 60                                  # step 3's percentile
    sample: str | None = None                    # step 4's sample id
    limit: str = "plausible"                     # step 6's limit

    @classmethod
    def coerce(cls, v) -> "LessonView":
        return v if isinstance(v, cls) else cls()


def clamp_step(step) -> int:
    """A step number from anything (a query string included): 1..6, 1 when unreadable."""
    try:
        k = int(float(str(step).strip()))
    except (TypeError, ValueError, OverflowError):
        return 1
    return min(max(k, 1), N_STEPS)
