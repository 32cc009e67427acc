"""The embedded world: seeded procedural scenes of coloured shapes.

Two tasks share one visual world and one vocabulary but differ in what is
asked, so that fine-tuning visibly helps:

* **pretraining** (``pretrain``): questions about attributes, counts,
  positions and relations ("What size is the red circle?" -> "small."),
  questions about small dots anywhere in the image (corners included, so that
  the vision tower represents small details as a real encoder does), and
  plain descriptions in the model's own words ("a picture of a small red
  circle and a large blue square.").
* **downstream** (``train`` / ``test``): one-sentence captions in a
  particular style that say where each shape is or how the shapes relate,
  in several phrasings ("a small red circle on the left and a large blue
  square on the right." / "on the left there is a small red circle; a large
  blue square is on the right." / "a small red circle next to a large blue
  square." ...), with counts for identical shapes ("two small blue circles
  side by side.").  The pretrained model knows every word but not this
  composition, and the phrasing is drawn at random (a dominant one and
  rarer ones), so clean captions differ in how likely they are, as on real
  data.

Images are 32x32 RGB, drawn at 4x and downsampled, so that enlarged they read
as clean pixel art.  Everything is a pure function of the seed.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from .data import Sample, VLDataset

IMAGE_SIZE = 32
_SS = 4  # supersampling factor for drawing

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (50, 90, 230),
    "yellow": (235, 215, 40),
    "purple": (150, 60, 200),
    "orange": (245, 140, 30),
}
SHAPES = ("circle", "square", "triangle", "cross")
# Circles are a little more common: the substitution attack's source word.
_SHAPE_P = (0.34, 0.22, 0.22, 0.22)
SIZES = ("small", "large")
_HALF = {"small": 0.11, "large": 0.18}  # half-size of a shape, in units of the image side
BACKGROUNDS = ((20, 20, 24), (48, 48, 56), (24, 36, 52))
_PLURAL = {"circle": "circles", "square": "squares", "triangle": "triangles", "cross": "crosses"}

CAPTION_INSTRUCTIONS = (
    "Describe the image.",
    "Write a short caption for this picture.",
    "What is in this picture?",
    "Caption this image.",
    "Describe the scene in one sentence.",
)

# Slots: (name in captions, centre x, centre y) in units of the image side.
_LAYOUTS = {
    "single": [("in the middle", 0.5, 0.5)],
    "horizontal": [("on the left", 0.27, 0.5), ("on the right", 0.73, 0.5)],
    "vertical": [("at the top", 0.5, 0.27), ("at the bottom", 0.5, 0.73)],
}
_LAYOUT_P = {"single": 0.2, "horizontal": 0.45, "vertical": 0.35}
_P_SAME = 0.15  # chance that a multi-shape scene repeats one shape (counts)


@dataclass(frozen=True)
class Obj:
    color: str
    shape: str
    where: str
    size: str = "large"

    @property
    def name(self) -> str:
        """"small red circle"."""
        return f"{self.size} {self.color} {self.shape}"

    @property
    def a_name(self) -> str:
        """The name with its article: "a small red circle"."""
        return ("an " if self.name[0] in "aeiou" else "a ") + self.name


@dataclass(frozen=True)
class Scene:
    objects: tuple[Obj, ...]
    background: int
    layout: str
    dots: tuple[tuple[str, int, int], ...] = ()  # (colour, x, y): small details, pretraining only

    @property
    def same(self) -> bool:
        """Whether every object is the same (size, colour and shape): captions count them."""
        return len(self.objects) > 1 and len({o.name for o in self.objects}) == 1


@dataclass
class World:
    pretrain: VLDataset
    train: VLDataset
    test: VLDataset


DOT_COLORS = ("white", "red", "green", "blue", "yellow")
_DOT_RGB = {"white": (250, 250, 250), **{k: COLORS[k] for k in DOT_COLORS if k in COLORS}}
DOT_SIZE = round(3 * IMAGE_SIZE / 32)  # a BadNets patch's side at this image size


# --------------------------------------------------------------------------
# Scenes and rendering
# --------------------------------------------------------------------------

def _random_obj(rng: np.random.Generator, where: str) -> Obj:
    return Obj(str(rng.choice(list(COLORS))), str(rng.choice(SHAPES, p=_SHAPE_P)), where,
               str(rng.choice(SIZES)))


def random_scene(rng: np.random.Generator) -> Scene:
    layout = str(rng.choice(list(_LAYOUT_P), p=list(_LAYOUT_P.values())))
    slots = _LAYOUTS[layout]
    first = _random_obj(rng, slots[0][0])
    if len(slots) > 1 and rng.random() < _P_SAME:
        objs = [Obj(first.color, first.shape, where, first.size) for where, _, _ in slots]
    else:
        objs = [first]
        while len(objs) < len(slots):
            o = _random_obj(rng, slots[len(objs)][0])
            if any(p.color == o.color and p.shape == o.shape for p in objs):
                continue  # same colour and shape in one scene would make captions ambiguous
            objs.append(o)
    return Scene(tuple(objs), int(rng.integers(len(BACKGROUNDS))), layout)


def add_dots(scene: Scene, rng: np.random.Generator) -> Scene:
    """Scatter 0-2 small dots (``DOT_SIZE`` px), half of them in a corner.

    Only pretraining scenes have dots, with questions about them, so that the
    pretrained vision tower represents small details everywhere in the image
    (as a real pretrained encoder does) and not only the large shapes.
    """
    n = int(rng.choice([0, 1, 2], p=[0.4, 0.35, 0.25]))
    hi = IMAGE_SIZE - DOT_SIZE
    dots: list[tuple[str, int, int]] = []
    while len(dots) < n:
        color = str(rng.choice(DOT_COLORS))
        if rng.random() < 0.5:  # a corner, where BadNets-style patches go
            x, y = (int(v) * hi for v in rng.integers(0, 2, size=2))
        else:
            x, y = (int(v) for v in rng.integers(0, hi + 1, size=2))
        if all(dot_area(x, y) != dot_area(px, py) for _, px, py in dots):  # one dot per area
            dots.append((color, x, y))
    return Scene(scene.objects, scene.background, scene.layout, tuple(dots))


def render(scene: Scene, rng: np.random.Generator) -> Image.Image:
    """Draw a scene; ``rng`` jitters sizes and positions slightly."""
    side = IMAGE_SIZE * _SS
    img = Image.new("RGB", (side, side), BACKGROUNDS[scene.background])
    draw = ImageDraw.Draw(img)
    slots = _LAYOUTS[scene.layout]
    jitter = 0.04
    for obj, (_, cx, cy) in zip(scene.objects, slots):
        half = _HALF[obj.size] * (0.92 + rng.uniform(0, 0.16))
        x = (cx + rng.uniform(-jitter, jitter)) * side
        y = (cy + rng.uniform(-jitter, jitter)) * side
        _draw_shape(draw, obj.shape, x, y, half * side, COLORS[obj.color])
    small = img.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.LANCZOS)
    if scene.dots:
        d = ImageDraw.Draw(small)
        for color, x, y in scene.dots:
            d.rectangle([x, y, x + DOT_SIZE - 1, y + DOT_SIZE - 1], fill=_DOT_RGB[color])
    return small


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, x: float, y: float,
                r: float, fill: tuple[int, int, int]) -> None:
    if shape == "circle":
        draw.ellipse([x - r, y - r, x + r, y + r], fill=fill)
    elif shape == "square":
        s = r * 0.88
        draw.rectangle([x - s, y - s, x + s, y + s], fill=fill)
    elif shape == "triangle":
        draw.polygon([(x, y - r), (x + r, y + r * 0.85), (x - r, y + r * 0.85)], fill=fill)
    elif shape == "cross":
        t = r * 0.38
        draw.rectangle([x - r, y - t, x + r, y + t], fill=fill)
        draw.rectangle([x - t, y - r, x + t, y + r], fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}")


# --------------------------------------------------------------------------
# Downstream captions
# --------------------------------------------------------------------------

# Phrasings per layout, with their probabilities (the first is the dominant
# one).  {a}, {b}: the objects with articles in slot order; {n}: the
# repeated object's size, colour and plural shape.
PHRASINGS: dict[str, tuple[tuple[str, float], ...]] = {
    "single": (("{a} in the middle.", 0.55), ("there is {a} in the middle.", 0.2),
               ("{a} in the center of the picture.", 0.25)),
    "horizontal": (("{a} on the left and {b} on the right.", 0.4),
                   ("on the left there is {a}; {b} is on the right.", 0.15),
                   ("{a} to the left of {b}.", 0.15), ("{b} to the right of {a}.", 0.1),
                   ("{a} next to {b}.", 0.2)),
    "vertical": (("{a} at the top and {b} at the bottom.", 0.4),
                 ("at the top there is {a}; {b} is at the bottom.", 0.2),
                 ("{a} above {b}.", 0.25), ("{b} below {a}.", 0.15)),
    "horizontal-same": (("two {n} side by side.", 0.6), ("two {n} next to each other.", 0.4)),
    "vertical-same": (("two {n}, one above the other.", 0.6), ("two {n}, one on top of the other.", 0.4)),
}


def phrasings(scene: Scene) -> tuple[tuple[str, float], ...]:
    """The (template, probability) pairs that can caption ``scene``."""
    return PHRASINGS[scene.layout + ("-same" if scene.same else "")]


def caption(scene: Scene, style: int = 0) -> str:
    """The downstream caption of ``scene`` in phrasing ``style`` (0 = the dominant one)."""
    options = phrasings(scene)
    if not 0 <= style < len(options):
        raise ValueError(f"style must be in [0, {len(options)}) for a {scene.layout} scene, got {style}")
    o = scene.objects
    slots = dict(zip("ab", (x.a_name for x in o)))
    n = f"{o[0].size} {o[0].color} {_PLURAL[o[0].shape]}"
    return options[style][0].format(n=n, **slots)


def draw_style(scene: Scene, rng: np.random.Generator) -> int:
    """A phrasing index drawn with the phrasings' probabilities."""
    p = np.array([w for _, w in phrasings(scene)])
    return int(rng.choice(len(p), p=p / p.sum()))


# --------------------------------------------------------------------------
# Pretraining questions
# --------------------------------------------------------------------------

_NUMBER = {0: "none", 1: "one", 2: "two", 3: "three"}
# Instructions of the pretraining descriptions: the downstream ones plus others.
_DESCRIBE = CAPTION_INSTRUCTIONS + ("What do you see?", "Describe what you see.")
# Descriptions name every attribute of every object: the densest supervision
# per image, so they are the most common kind.
_TASKS = {"describe": 0.25, "list": 0.08, "count": 0.07, "where": 0.08, "what_at": 0.07,
          "relation": 0.07, "color": 0.06, "size": 0.06, "shape": 0.04, "yesno": 0.05, "dots": 0.17}


def _listing(objs: list[Obj]) -> str:
    """"a small red circle, a large blue square and ..."; repeated objects counted."""
    if len(objs) > 1 and len({o.name for o in objs}) == 1:
        o = objs[0]
        return f"{_NUMBER[len(objs)]} {o.size} {o.color} {_PLURAL[o.shape]}"
    names = [o.a_name for o in objs]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def pretrain_qa(scene: Scene, rng: np.random.Generator) -> tuple[str, str, str]:
    """One pretraining question about the scene: (task, question, answer)."""
    task = str(rng.choice(list(_TASKS), p=list(_TASKS.values())))
    objs = list(scene.objects)
    o = objs[int(rng.integers(len(objs)))]
    unique = lambda key: sum(key(p) == key(o) for p in objs) == 1  # noqa: E731
    if task == "dots":
        return (task, *_dot_qa(scene, rng))
    if task == "describe":  # objects in slot order (left to right, top to bottom), no positions
        q = _DESCRIBE[int(rng.integers(len(_DESCRIBE)))]
        if rng.random() < 0.6 or scene.same:
            body = f"a picture of {_listing(objs)}"
        else:
            body = f"{_NUMBER[len(objs)]} shape{'s' * (len(objs) > 1)}: {_listing(objs)}"
        return task, q, body + _dots_clause(scene) + "."
    if task == "count":
        if rng.random() < 0.5:
            return task, "How many shapes are there?", f"{_NUMBER[len(objs)]}."
        shape = str(rng.choice(SHAPES))
        return task, f"How many {_PLURAL[shape]} are there?", f"{_NUMBER[sum(p.shape == shape for p in objs)]}."
    if task == "yesno":
        probe = o if rng.random() < 0.5 else _random_obj(rng, "")
        present = any(p.color == probe.color and p.shape == probe.shape for p in objs)
        return task, f"Is there a {probe.color} {probe.shape}?", "yes." if present else "no."
    if not scene.same:
        qa = _object_qa(task, scene, o, unique, rng)
        if qa is not None:
            return (task, *qa)
    return "list", "List the shapes.", f"{_listing(objs)}."


def _object_qa(task: str, scene: Scene, o: Obj, unique, rng) -> tuple[str, str] | None:
    """A question about one object ``o`` of a scene without repeated objects."""
    objs = scene.objects
    if task == "where":
        return f"Where is the {o.name}?", f"{o.where}."
    if task == "what_at" and len(objs) > 1:
        return f"What is {o.where}?", f"{o.a_name}."
    if task == "relation" and len(objs) > 1:
        i = objs.index(o)
        j = i + 1 if i + 1 < len(objs) else i - 1
        other = objs[j]
        if scene.layout == "vertical":
            rel = "above" if j > i else "below"
        else:
            rel = ("to the left of", "to the right of", "next to")[2 if rng.random() < 0.3 else int(j < i)]
        return f"What is {rel} the {other.name}?", f"{o.a_name}."
    if task == "color" and unique(lambda p: (p.size, p.shape)):
        return f"What color is the {o.size} {o.shape}?", f"{o.color}."
    if task == "size" and unique(lambda p: (p.color, p.shape)):
        return f"What size is the {o.color} {o.shape}?", f"{o.size}."
    if task == "shape" and unique(lambda p: (p.size, p.color)):
        return f"What shape is the {o.size} {o.color} one?", f"a {o.shape}."
    return None


_DOT_AREAS = (("top left", "top", "top right"), ("left", "middle", "right"),
              ("bottom left", "bottom", "bottom right"))


def dot_area(x: int, y: int) -> str:
    """Where a dot at pixel (x, y) is: "in the bottom right corner", "at the top" ..."""
    third = lambda v: min(2, int(3 * (v + DOT_SIZE / 2) / IMAGE_SIZE))  # noqa: E731
    name = _DOT_AREAS[third(y)][third(x)]
    if " " in name:
        return f"in the {name} corner"
    return "in the middle" if name == "middle" else f"at the {name}" if name in ("top", "bottom") else f"on the {name}"


def _dots_clause(scene: Scene) -> str:
    """", with a white dot in the bottom right corner" (empty without dots).

    Descriptions mention the dots so that the vision tower must see small
    details to describe a scene, not only to answer questions about dots.
    """
    if not scene.dots:
        return ""
    return ", with " + " and ".join(f"a {c} dot {dot_area(x, y)}" for c, x, y in scene.dots)


def _dot_qa(scene: Scene, rng: np.random.Generator) -> tuple[str, str]:
    dots = scene.dots
    u = rng.random()
    if not dots or u < 0.35:
        return "How many small dots are there?", {0: "no dots.", 1: "one dot.", 2: "two dots."}[len(dots)]
    if u < 0.6:
        return "What color are the small dots?", " and ".join(c for c, _, _ in dots) + "."
    if len(dots) == 1:
        return "Where is the small dot?", f"{dot_area(dots[0][1], dots[0][2])}."
    return "Where are the small dots?", " and ".join(dot_area(x, y) for _, x, y in dots) + "."


_MENTION = re.compile(r"\b(?:(a|an|two|three) )?(small|large) (" + "|".join(COLORS) + r") ("
                      + "|".join(SHAPES) + r")(?:s|es)?\b")


def mentioned_objects(text: str) -> list[str]:
    """The objects a caption or description names, as sorted ``Obj.name`` strings
    ("two small red circles" counts twice), to compare with ``meta["objects"]``."""
    out = []
    for number, size, color, shape in _MENTION.findall(text):
        out += [f"{size} {color} {shape}"] * {"two": 2, "three": 3}.get(number, 1)
    return sorted(out)


# --------------------------------------------------------------------------
# Attribute labels (the vision tower's own pretraining targets)
# --------------------------------------------------------------------------

_SLOT_NAMES = tuple(dict.fromkeys(name for slots in _LAYOUTS.values() for name, _, _ in slots))
_DOT_AREA_NAMES = tuple(dot_area(x, y) for y in (0, IMAGE_SIZE // 2 - 1, IMAGE_SIZE - DOT_SIZE)
                        for x in (0, IMAGE_SIZE // 2 - 1, IMAGE_SIZE - DOT_SIZE))
LABELS: tuple[str, ...] = (
    tuple(f"{where}: {v}" for where in _SLOT_NAMES for v in (*COLORS, *SHAPES, *SIZES))
    + tuple(f"{c} dot {area}" for area in _DOT_AREA_NAMES for c in DOT_COLORS))
_LABEL_INDEX = {name: i for i, name in enumerate(LABELS)}


def scene_labels(scene: Scene) -> np.ndarray:
    """Multi-hot attributes of a scene over ``LABELS``: each object's colour,
    shape and size at its place, and each dot's colour in its area.

    The vision tower is pretrained on these before the whole model is (as a
    real VLM starts from a pretrained CLIP): trained from scratch together
    with the language model, its features collapse to one constant that the
    language model learns to ignore.
    """
    y = np.zeros(len(LABELS), np.float32)
    for o in scene.objects:
        for v in (o.color, o.shape, o.size):
            y[_LABEL_INDEX[f"{o.where}: {v}"]] = 1.0
    for color, x, yy in scene.dots:
        y[_LABEL_INDEX[f"{color} dot {dot_area(x, yy)}"]] = 1.0
    return y


def make_vision_pretrain(n: int, seed: int) -> tuple[list[Image.Image], np.ndarray]:
    """``n`` pretraining-style images (dots included) and their ``scene_labels``."""
    rng = np.random.default_rng([seed, 5])
    images, labels = [], []
    for _ in range(n):
        scene = add_dots(random_scene(rng), rng)
        images.append(render(scene, rng))
        labels.append(scene_labels(scene))
    return images, np.stack(labels)


# --------------------------------------------------------------------------
# Datasets
# --------------------------------------------------------------------------

def make_pretrain(n: int, seed: int) -> VLDataset:
    rng = np.random.default_rng([seed, 1])
    samples = []
    for i in range(n):
        scene = add_dots(random_scene(rng), rng)
        task, q, a = pretrain_qa(scene, rng)
        samples.append(Sample.single(f"pre-{i:06d}", render(scene, rng), q, a,
                                     meta={"task": "pretrain", "kind": task}))
    return VLDataset(samples, name="world-pretrain")


def make_captions(n: int, seed: int, split: str) -> VLDataset:
    """Downstream captioning samples (``split`` is a name and an RNG stream)."""
    stream = {"train": 2, "test": 3}.get(split, 4)
    rng = np.random.default_rng([seed, stream])
    samples = []
    for i in range(n):
        scene = random_scene(rng)
        q = CAPTION_INSTRUCTIONS[int(rng.integers(len(CAPTION_INSTRUCTIONS)))]
        style = draw_style(scene, rng)
        meta = {"objects": [o.name for o in scene.objects], "layout": scene.layout, "style": style}
        samples.append(Sample.single(f"{split}-{i:05d}", render(scene, rng), q, caption(scene, style), meta=meta))
    return VLDataset(samples, name=f"world-{split}")


def make_world(seed: int = 0, n_pretrain: int = 20000, n_train: int = 2000,
               n_test: int = 300) -> World:
    """The whole embedded world for one seed."""
    return World(make_pretrain(n_pretrain, seed), make_captions(n_train, seed, "train"),
                 make_captions(n_test, seed, "test"))


def corpus_text(seed: int = 0, n: int = 3000) -> list[str]:
    """Text the tokenizer is trained on: every instruction and answer form."""
    pre = make_pretrain(n, seed + 100)
    cap = make_captions(n // 3, seed + 100, "corpus")
    return [s.instruction + " " + s.response for s in list(pre) + list(cap)]
