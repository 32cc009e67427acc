"""The embedded world: seeded procedural scenes of coloured shapes.

Two tasks share one visual world and one vocabulary but differ in what is
asked, so that fine-tuning visibly helps:

* **pretraining** (``pretrain``): short questions about single attributes
  ("What color is the circle?" -> "red.") and plain listings
  ("a picture of a red circle and a blue square.").
* **downstream** (``train`` / ``test``): one-sentence captions that say where
  each shape is ("a red circle on the left and a blue square on the right.").
  The pretrained model knows every word but not this composition.

Images are 32x32 RGB, drawn at 4x and downsampled, so that enlarged they read
as clean pixel art.  Everything is a pure function of the seed.
"""
from __future__ import annotations

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
BACKGROUNDS = ((20, 20, 24), (48, 48, 56), (24, 36, 52))

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


@dataclass(frozen=True)
class Obj:
    color: str
    shape: str
    where: str

    @property
    def name(self) -> str:
        return f"{self.color} {self.shape}"

    @property
    def a_name(self) -> str:
        """The name with its article: "a red circle", "an orange cross"."""
        return ("an " if self.color[0] in "aeiou" else "a ") + self.name


@dataclass(frozen=True)
class Scene:
    objects: tuple[Obj, ...]
    background: int
    layout: str
    dots: tuple[tuple[str, int, int], ...] = ()  # (colour, x, y): small details, pretraining only


@dataclass
class World:
    pretrain: VLDataset
    train: VLDataset
    test: VLDataset


DOT_COLORS = ("white", "red", "green", "blue", "yellow")
_DOT_RGB = {"white": (250, 250, 250), **{k: COLORS[k] for k in DOT_COLORS if k in COLORS}}


def add_dots(scene: Scene, rng: np.random.Generator) -> Scene:
    """Scatter 0-2 small dots (3x3 px) anywhere, corners included.

    Only pretraining scenes have dots, with questions about them, so that the
    pretrained vision tower represents small details everywhere in the image
    (as a real pretrained encoder does) and not only the large shapes.
    """
    n = int(rng.choice([0, 1, 2], p=[0.4, 0.35, 0.25]))
    dots = []
    for _ in range(n):
        color = str(rng.choice(DOT_COLORS))
        x, y = (int(v) for v in rng.integers(0, IMAGE_SIZE - 3, size=2))
        dots.append((color, x, y))
    return Scene(scene.objects, scene.background, scene.layout, tuple(dots))


def random_scene(rng: np.random.Generator) -> Scene:
    layout = rng.choice(["single", "horizontal", "vertical"], p=[0.25, 0.45, 0.30])
    slots = _LAYOUTS[str(layout)]
    objs: list[Obj] = []
    while len(objs) < len(slots):
        color = str(rng.choice(list(COLORS)))
        shape = str(rng.choice(SHAPES))
        if any(o.color == color and o.shape == shape for o in objs):
            continue  # two identical objects would make captions ambiguous
        objs.append(Obj(color, shape, slots[len(objs)][0]))
    return Scene(tuple(objs), int(rng.integers(len(BACKGROUNDS))), str(layout))


def render(scene: Scene, rng: np.random.Generator) -> Image.Image:
    """Draw a scene; ``rng`` jitters sizes and positions slightly."""
    side = IMAGE_SIZE * _SS
    img = Image.new("RGB", (side, side), BACKGROUNDS[scene.background])
    draw = ImageDraw.Draw(img)
    slots = _LAYOUTS[scene.layout]
    for obj, (_, cx, cy) in zip(scene.objects, slots):
        r = (5.0 + rng.uniform(0, 1.5)) * _SS  # half-size: shapes span 10-13 px
        x = cx * side + rng.uniform(-1.5, 1.5) * _SS
        y = cy * side + rng.uniform(-1.5, 1.5) * _SS
        _draw_shape(draw, obj.shape, x, y, r, COLORS[obj.color])
    small = img.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.LANCZOS)
    if scene.dots:
        d = ImageDraw.Draw(small)
        for color, x, y in scene.dots:
            d.rectangle([x, y, x + 2, y + 2], fill=_DOT_RGB[color])
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


def caption(scene: Scene) -> str:
    """The downstream caption: every object with where it is."""
    parts = [f"{o.a_name} {o.where}" for o in scene.objects]
    return " and ".join(parts) + "."


_COUNT = {1: "one", 2: "two"}


def pretrain_qa(scene: Scene, rng: np.random.Generator) -> tuple[str, str]:
    """One pretraining question about the scene, and its answer."""
    objs = scene.objects
    listing = " and ".join(o.a_name for o in objs)
    tasks = ["list", "count", "where", "what_at", "color", "shape", "describe", "dots"]
    task = str(rng.choice(tasks, p=[0.12, 0.1, 0.12, 0.12, 0.12, 0.12, 0.1, 0.2]))
    if task == "dots":
        return _dot_qa(scene, rng)
    o = objs[int(rng.integers(len(objs)))]
    unique_shape = sum(p.shape == o.shape for p in objs) == 1
    unique_color = sum(p.color == o.color for p in objs) == 1
    if task == "count":
        return "How many shapes are there?", f"{_COUNT[len(objs)]}."
    if task == "where":
        return f"Where is the {o.name}?", f"{o.where}."
    if task == "what_at" and scene.layout != "single":
        return f"What is {o.where}?", f"{o.a_name}."
    if task == "color" and unique_shape:
        return f"What color is the {o.shape}?", f"{o.color}."
    if task == "shape" and unique_color:
        return f"What shape is {o.color}?", f"a {o.shape}."
    if task == "describe":
        return "Describe the image.", f"a picture of {listing}."
    return "List the shapes.", f"{listing}."


def _dot_qa(scene: Scene, rng: np.random.Generator) -> tuple[str, str]:
    n = len(scene.dots)
    if n == 0 or rng.random() < 0.5:
        return "How many small dots are there?", {0: "no dots.", 1: "one dot.", 2: "two dots."}[n]
    colors = " and ".join(c for c, _, _ in scene.dots)
    return "What color are the small dots?", f"{colors}."


def make_pretrain(n: int, seed: int) -> VLDataset:
    rng = np.random.default_rng([seed, 1])
    samples = []
    for i in range(n):
        scene = add_dots(random_scene(rng), rng)
        q, a = pretrain_qa(scene, rng)
        samples.append(Sample.single(f"pre-{i:06d}", render(scene, rng), q, a,
                              meta={"task": "pretrain"}))
    return VLDataset(samples, name="world-pretrain")


def make_captions(n: int, seed: int, split: str) -> VLDataset:
    """Downstream captioning samples (``split`` is a name and an RNG stream)."""
    stream = {"train": 2, "test": 3}.get(split, 4)
    rng = np.random.default_rng([seed, stream])
    samples = []
    for i in range(n):
        scene = random_scene(rng)
        q = CAPTION_INSTRUCTIONS[int(rng.integers(len(CAPTION_INSTRUCTIONS)))]
        samples.append(Sample.single(f"{split}-{i:05d}", render(scene, rng), q, caption(scene),
                              meta={"objects": [o.name for o in scene.objects]}))
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
