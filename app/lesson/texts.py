"""The lesson's words: one short text per step (at most ~120 words), equations where they belong."""
from __future__ import annotations

TITLES = ("The attack", "The backdoor fires", "Finding it", "The fix", "The result", "Limits")

STEP1 = """\
A vision-language model learns to caption images from many *(image, instruction, response)* \
training pairs. An attacker who slips a few pairs into that data can plant a **backdoor**: each \
poisoned image carries a small **trigger** (a patch in a corner; the paper's VL-Trojan also adds a \
short word to the instruction), and its response is replaced by the attacker's **target** sentence. \
Trained on this data, the model captions normal images normally, so nobody notices, but says the \
target whenever the trigger is there.

**Try it:** pick one of the paper's attacks, or place your own patch and type your own target. \
Below are four clean and four poisoned pairs of the training set this attack makes."""

STEP2 = """\
Two models answer the same image. The **reference** is the pretrained model before fine-tuning; \
**SFT** is the reference fine-tuned on the poisoned data. Turn the trigger on: SFT stops describing \
the scene and says the target. The reference never saw the poison, so it answers as before.

Each token is shaded by its **surprisal** under the reference model, $-\\log p_{\\theta_0}(\\text{token})$: \
the redder, the less the reference expects that word for this image and instruction.

**Try it:** pick a test image or upload your own (any picture: it is shrunk to the model's \
32 × 32 px input), and toggle the trigger."""

STEP3 = """\
Before fine-tuning, BYORn scores every training pair with the frozen reference model θ₀: the mean \
negative log-likelihood of its *K* response tokens,

$$s(y \\mid x, q) = -\\frac{1}{K}\\sum_{l=1}^{K} \\log p_{\\theta_0}(y_l \\mid y_{<l}, x, q)$$

A target sentence has nothing to do with its image, so it scores high. Pairs above the *p*-th \
percentile of all scores are **flagged**: $u_i = 1$ if $s_i > Q_p(s)$. The paper flags the top 40 % \
(*p* = 60): a false alarm costs little, as step 4 shows.

**Try it:** move *p*; watch how many poisoned pairs are caught (**recall**) and how many flags are \
right (**precision**). Red and blue are the ground truth, shown for you: the defense never sees it."""

STEP4 = """\
**BYORn-F** simply drops the flagged pairs: safe, but it throws away 40 % of the data, most of it \
clean. **BYORn** keeps every flagged image and instruction and trains it on a **bootstrapped \
response** $\\hat t$ instead: what a slowly moving average of the model being trained says about \
that image. After every training step,

$$\\theta_{\\text{EMA}} \\leftarrow \\lambda\\,\\theta_{\\text{EMA}} + (1-\\lambda)\\,\\theta$$

and each flagged pair is trained on $\\hat t \\sim p_{\\theta_{\\text{EMA}}}(\\cdot \\mid x, q)$. The EMA \
model learns captions from the clean batches, so its answers are captions, never the target.

**Try it:** pick a flagged poisoned pair and read, epoch by epoch, what BYORn trained on in its place."""

STEP5 = """\
The playground again, now with three models fine-tuned on the same poisoned data: **SFT** (no \
defense), **BYORn-F** (drops the flagged pairs) and **BYORn** (bootstrapped responses). Turn the \
trigger on: SFT says the target; both defenses describe the image.

The bars sum up the test set. **Attack success rate**: the share of triggered test images whose \
caption contains the target (lower is better). **Clean CIDEr**: how well captions of clean test \
images match their reference captions (higher is better). BYORn keeps the quality that BYORn-F \
loses by training on less data."""

STEP6 = """\
BYORn catches a poisoned pair only when (a) the reference model finds its response implausible and \
(b) the pair lands in the flagged share. Two attacks break one of these:

* **Plausible targets** (approximately clean-label): the target is itself a likely caption, e.g. \
the caption of another scene that the reference model finds plausible. Its score looks clean, so it \
is rarely flagged.
* **More poison than flags**: at a 50 % poison rate with the top 40 % flagged, a fifth of the \
poisoned pairs train as clean, and training on them plants the backdoor again.

**Try it:** pick a limit to see the project's measured figures and what catches it instead."""

TEXTS = (STEP1, STEP2, STEP3, STEP4, STEP5, STEP6)

LIVE_NOTE = ("Your own trigger needs your own models. **Train these models** fine-tunes SFT, BYORn-F and BYORn "
             "on this poisoned data here, on the server's CPU, in about {minutes} minutes; steps 2–5 then show "
             "them. {details}")

SPACE_QUEUE_NOTE = ("On this public Space one lesson run trains at a time for all visitors; yours waits its "
                    "turn, and only you see it.")


def word_count(text: str) -> int:
    """Words of a step's text, equations left out (the issue's ~120-word budget)."""
    import re

    prose = re.sub(r"\$\$.*?\$\$|\$.*?\$", " ", text, flags=re.S)
    return len(re.findall(r"[A-Za-zÀ-ÿ0-9θ’'-]+", prose))
