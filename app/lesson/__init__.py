"""The Lesson tab: a guided six-step lesson on backdoors and BYORn, the first tab a visitor sees.

1. the attack (pick a paper attack or make your own; four clean and four
   poisoned pairs; "train these models" for your own), 2. the backdoor fires
   (a playground: reference vs SFT, trigger on / off, your own image),
   3. finding it (score histogram, percentile split, the most suspicious
   pairs, one poisoned pair's surprisals), 4. the fix (BYORn's bootstrapped
   responses epoch by epoch beside BYORn-F), 5. the result (SFT vs BYORn-F vs
   BYORn; ASR and clean CIDEr bars), 6. limits (measured).

Each step has its own address (``?lesson=3``), the ← / → keys move between
steps, and a switch enlarges the text for a projector.  The method's side is
:mod:`byorn.lesson`; this package only shows it (``ui`` layout and wiring,
``steps`` handlers, ``engine`` the shared read-only lesson runs and caption
cache, ``live`` the queue of visitors' own runs, ``render`` HTML, ``texts``
the words, ``limits`` step 6's measured figures).
"""
from .render import CSS
from .ui import build_lesson, wire_lesson

__all__ = ["CSS", "build_lesson", "wire_lesson"]
