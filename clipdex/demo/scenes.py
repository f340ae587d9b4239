"""Captioned synthetic scenes: one coloured shape at a named position on a plain background.

Every caption is true of its picture ("a red circle on the left on a white background"), so a model
fine-tuned on them can be checked semantically: a search hit counts when the returned picture shows
the same description, even if it is another file. There are 360 descriptions (6 colours x 4 shapes x
5 positions x 3 backgrounds); `split_descriptions` holds whole combinations out of training, so a
test can ask about descriptions the model has never seen, made of words it has.
"""

from __future__ import annotations

import csv
import math
import random
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 60, 220),
    "yellow": (240, 220, 30),
    "purple": (140, 40, 180),
    "orange": (250, 140, 20),
}
SHAPES = ("circle", "square", "triangle", "cross")
# name -> (phrase, centre as a fraction of the side)
POSITIONS = {
    "left": ("on the left", (0.27, 0.5)),
    "right": ("on the right", (0.73, 0.5)),
    "top": ("at the top", (0.5, 0.27)),
    "bottom": ("at the bottom", (0.5, 0.73)),
    "center": ("in the center", (0.5, 0.5)),
}
BACKGROUNDS = {"white": (250, 250, 250), "black": (15, 15, 15), "gray": (128, 128, 128)}
# The same descriptions in Chinese ("红色圆形在白色背景的左边": red circle, white background's left)
ZH = {
    "red": "红色", "green": "绿色", "blue": "蓝色", "yellow": "黄色", "purple": "紫色", "orange": "橙色",
    "circle": "圆形", "square": "正方形", "triangle": "三角形", "cross": "十字",
    "left": "左边", "right": "右边", "top": "上方", "bottom": "下方", "center": "中间",
    "white": "白色", "black": "黑色", "gray": "灰色",
}  # fmt: skip
LANGUAGES = ("en", "zh")


@dataclass(frozen=True)
class Scene:
    colour: str
    shape: str
    position: str
    background: str

    @property
    def caption(self) -> str:
        phrase = POSITIONS[self.position][0]
        return f"a {self.colour} {self.shape} {phrase} on a {self.background} background"

    def caption_in(self, lang: str = "en") -> str:
        """The caption in English (``en``) or Chinese (``zh``)."""
        if lang == "zh":
            return f"{ZH[self.colour]}{ZH[self.shape]}在{ZH[self.background]}背景的{ZH[self.position]}"
        if lang != "en":
            raise ValueError(f"unknown caption language {lang!r} (use {', '.join(LANGUAGES)})")
        return self.caption

    @property
    def key(self) -> str:
        """The scene description: equal keys mean the pictures say the same thing."""
        return f"{self.colour}/{self.shape}/{self.position}/{self.background}"

    def draw(self, size: int = 128, rng: random.Random | None = None) -> Image.Image:
        """Render the scene; ``rng`` adds a little jitter in size and position."""
        rng = rng or random.Random(0)
        img = Image.new("RGB", (size, size), BACKGROUNDS[self.background])
        fx, fy = POSITIONS[self.position][1]
        cx = (fx + rng.uniform(-0.04, 0.04)) * size
        cy = (fy + rng.uniform(-0.04, 0.04)) * size
        r = size * rng.uniform(0.15, 0.19)
        _draw_shape(ImageDraw.Draw(img), self.shape, cx, cy, r, COLOURS[self.colour])
        return img


def _draw_shape(d: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, fill: tuple) -> None:
    if shape == "circle":
        d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif shape == "square":
        s = r * 0.85
        d.rectangle((cx - s, cy - s, cx + s, cy + s), fill=fill)
    elif shape == "triangle":
        pts = [
            (cx + r * math.cos(a), cy - r * math.sin(a))
            for a in (math.pi / 2, 7 * math.pi / 6, 11 * math.pi / 6)
        ]
        d.polygon(pts, fill=fill)
    elif shape == "cross":
        t = r * 0.35
        d.rectangle((cx - r, cy - t, cx + r, cy + t), fill=fill)
        d.rectangle((cx - t, cy - r, cx + t, cy + r), fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}")


def all_scenes() -> list[Scene]:
    """Every description once, in a fixed order."""
    return [Scene(c, sh, p, b) for c in COLOURS for sh in SHAPES for p in POSITIONS for b in BACKGROUNDS]


def split_descriptions(unseen_fraction: float = 0.2, seed: int = 0) -> tuple[list[str], list[str]]:
    """(seen, unseen) description keys: a seeded share of whole attribute combinations held out.

    Every single colour, shape, position and background still occurs among the seen ones.
    """
    keys = [s.key for s in all_scenes()]
    rng = random.Random(f"descriptions-{seed}")
    while True:
        unseen = set(rng.sample(keys, round(len(keys) * unseen_fraction)))
        seen = [k for k in keys if k not in unseen]
        if all(len({k.split("/")[i] for k in seen}) == n for i, n in enumerate((6, 4, 5, 3))):
            return seen, [k for k in keys if k in unseen]


def random_scenes(n: int, seed: int = 0, keys: Collection[str] | None = None) -> list[Scene]:
    """``n`` scenes (deterministic for a seed): attributes drawn independently, or, with ``keys``,
    descriptions drawn uniformly from those."""
    rng = random.Random(seed)
    if keys is not None:
        pool = [s for s in all_scenes() if s.key in set(keys)]
        return [rng.choice(pool) for _ in range(n)]
    return [
        Scene(
            rng.choice(list(COLOURS)),
            rng.choice(SHAPES),
            rng.choice(list(POSITIONS)),
            rng.choice(list(BACKGROUNDS)),
        )
        for _ in range(n)
    ]


def make_scenes(
    folder: str | Path,
    n: int,
    seed: int = 0,
    size: int = 128,
    keys: Collection[str] | None = None,
    captioned: Collection[str] | None = None,
    lang: str = "en",
) -> list[tuple[Path, str]]:
    """Write ``scene_00001.png`` + ``scene_00001.txt`` (its caption) for ``n`` scenes; return (path, caption).

    ``keys`` limits the descriptions drawn; only scenes whose description is in ``captioned`` (default:
    all) get the sidecar ``.txt``, in ``lang`` (``en`` or ``zh``). The same arguments give the same
    files, pixel for pixel.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    jitter = random.Random(f"jitter-{seed}")
    captioned = set(captioned) if captioned is not None else None
    out = []
    for i, scene in enumerate(random_scenes(n, seed, keys), start=1):
        path = folder / f"scene_{i:05d}.png"
        scene.draw(size, jitter).save(path)
        caption = scene.caption_in(lang)
        if captioned is None or scene.key in captioned:
            path.with_suffix(".txt").write_text(caption + "\n", encoding="utf-8")
        out.append((path, caption))
    return out


def write_pairs(path: str | Path, scenes: Sequence[tuple[Path, str]]) -> Path:
    """A PAIRS csv (``image``, ``caption``) for `clipdex eval`/`finetune`."""
    path = Path(path)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image", "caption"])
        writer.writerows((str(p), caption) for p, caption in scenes)
    return path


def scene_key(caption: str) -> str:
    """The description key of a scene caption (captions are a pure function of the description)."""
    caption = caption.strip()
    if caption and not caption.isascii():  # Chinese: "{colour}{shape}在{background}背景的{position}"
        back = {v: k for k, v in ZH.items()}
        head, _, tail = caption.partition("在")
        background, _, position = tail.partition("背景的")
        colour = next(k for k in COLOURS if head.startswith(ZH[k]))
        return f"{colour}/{back[head[len(ZH[colour]) :]]}/{back[position]}/{back[background]}"
    words = caption.split()
    # "a {colour} {shape} {on the left | at the top | in the center ...} on a {background} background"
    colour, shape, background = words[1], words[2], words[-2]
    position = words[5]
    return f"{colour}/{shape}/{position}/{background}"
