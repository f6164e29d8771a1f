"""Procedural drawing of one synthetic pedestrian for :mod:`dataset_tools.synthetic`.

:func:`render` draws an :class:`Identity` with PIL.ImageDraw, seen from
the front or the back, with per-image pose jitter (leg spread, arm angles, elbow bend, lean,
mirroring), colour jitter, a random background and camera jitter (scale, translation,
brightness/contrast, noise, optional blur). Shapes are drawn at twice the output size and
reduced, which anti-aliases them. Coordinates are in *body units*: x to the right of the
body axis, y down from the top of the head, feet at 100.
"""

from __future__ import annotations

import math
from dataclasses import astuple, dataclass
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFilter


@dataclass(frozen=True)
class Identity:
    """One person. ``None`` marks an absent value (no inner top, no lower garment under a
    dress, no hair colour when bald, no bag colour without a bag)."""

    gender: str
    hair_style: str
    hair_colour: Optional[str]
    upper_type: str
    upper_colour: str
    inner_colour: Optional[str]  # top seen through an open jacket
    lower_type: Optional[str]
    lower_colour: Optional[str]
    shoes_colour: str
    bag_type: str
    bag_colour: Optional[str]
    skin: int = 0  # skin tone index (drawn, not described; not part of the attribute key)

    def key(self) -> Tuple[Optional[str], ...]:
        """The described attributes: unique per identity."""
        return astuple(self)[:-1]


RGB = Tuple[int, ...]
Point = Tuple[float, float]

PALETTE: Dict[str, RGB] = {
    "black": (30, 30, 32),
    "white": (236, 236, 232),
    "grey": (128, 128, 132),
    "red": (198, 32, 38),
    "blue": (36, 76, 190),
    "green": (40, 138, 60),
    "yellow": (234, 202, 40),
    "purple": (120, 52, 152),
    "pink": (240, 142, 182),
    "brown": (118, 74, 40),
    "orange": (238, 128, 30),
}
HAIR_RGB: Dict[str, RGB] = {
    "black": (24, 22, 22),
    "brown": (96, 60, 34),
    "blond": (216, 186, 112),
    "grey": (158, 156, 154),
}
SKIN_RGB: Sequence[RGB] = ((242, 204, 174), (224, 178, 140), (184, 134, 98), (124, 84, 58))
BACKGROUND_RGB: Sequence[RGB] = (
    (150, 150, 150),
    (192, 182, 162),
    (118, 128, 140),
    (160, 172, 150),
    (204, 204, 208),
    (108, 100, 92),
    (172, 150, 130),
    (88, 98, 110),
    (142, 162, 182),
    (212, 200, 178),
)
BUILD = {"man": dict(shoulder=11.4, waist=9.4, hip=9.4), "woman": dict(shoulder=9.8, waist=7.6, hip=10.4)}
HEM = {"t-shirt": (53, 0.4), "shirt": (53, 0.4), "jacket": (57, 1.0), "coat": (70, 2.6), "dress": (75, 5.5)}
SUPERSAMPLE = 2


@dataclass
class Pose:
    back_view: bool
    flip: bool
    legs: Tuple[float, float]  # outward angle of each leg, degrees
    arms: Tuple[float, float]  # outward angle of each upper arm, degrees
    bends: Tuple[float, float]  # elbow bend (forearm turned towards the body), degrees
    lean: float  # degrees


def sample_pose(rng: np.random.Generator) -> Pose:
    return Pose(
        back_view=bool(rng.random() < 0.3),
        flip=bool(rng.random() < 0.5),
        legs=(float(rng.uniform(1, 9)), float(rng.uniform(1, 9))),
        arms=(float(rng.uniform(4, 22)), float(rng.uniform(4, 22))),
        bends=(float(rng.uniform(-4, 16)), float(rng.uniform(-4, 16))),
        lean=float(rng.uniform(-4, 4)),
    )


def _jitter(rgb: RGB, rng: np.random.Generator, amount: int = 12) -> RGB:
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in rgb)


def _dark(rgb: RGB, factor: float = 0.7) -> RGB:
    return tuple(int(c * factor) for c in rgb[:3])


class Pen:
    """ImageDraw in body units (optionally mirrored about the body axis)."""

    def __init__(self, draw: ImageDraw.ImageDraw, cx: float, top: float, unit: float, flip: bool) -> None:
        self.draw, self.cx, self.top, self.unit, self.flip = draw, cx, top, unit, flip

    def pt(self, x: float, y: float) -> Point:
        return self.cx + (-x if self.flip else x) * self.unit, self.top + y * self.unit

    def poly(self, points: Sequence[Point], fill: RGB) -> None:
        self.draw.polygon([self.pt(x, y) for x, y in points], fill=fill, outline=_dark(fill))

    def ellipse(self, x: float, y: float, rx: float, ry: float, fill: RGB, outline: bool = True) -> None:
        (x0, y0), (x1, y1) = self.pt(x - rx, y - ry), self.pt(x + rx, y + ry)
        self.draw.ellipse((min(x0, x1), y0, max(x0, x1), y1), fill=fill, outline=_dark(fill) if outline else None)

    def cap(self, x: float, y: float, rx: float, ry: float, fill: RGB) -> None:
        """Upper half of an ellipse (hair on top of a head)."""
        (x0, y0), (x1, y1) = self.pt(x - rx, y - ry), self.pt(x + rx, y + ry)
        self.draw.chord((min(x0, x1), y0, max(x0, x1), y1), 180, 360, fill=fill)

    def limb(self, a: Point, b: Point, w0: float, w1: float, fill: RGB) -> None:
        """A tapered segment with round ends, widths w0 at a and w1 at b."""
        dx, dy = b[0] - a[0], b[1] - a[1]
        norm = math.hypot(dx, dy) or 1.0
        nx, ny = -dy / norm / 2, dx / norm / 2
        self.poly(
            [
                (a[0] + nx * w0, a[1] + ny * w0),
                (b[0] + nx * w1, b[1] + ny * w1),
                (b[0] - nx * w1, b[1] - ny * w1),
                (a[0] - nx * w0, a[1] - ny * w0),
            ],
            fill,
        )
        self.ellipse(a[0], a[1], w0 / 2, w0 / 2, fill, outline=False)
        self.ellipse(b[0], b[1], w1 / 2, w1 / 2, fill, outline=False)


def _along(a: Point, length: float, angle: float, side: int) -> Point:
    rad = math.radians(angle)
    return a[0] + side * length * math.sin(rad), a[1] + length * math.cos(rad)


def _lerp(a: Point, b: Point, t: float) -> Point:
    return a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t


def _colours(p: "Identity", rng: np.random.Generator) -> Dict[str, RGB]:
    skin = SKIN_RGB[p.skin % len(SKIN_RGB)]
    names = {
        "upper": p.upper_colour,
        "inner": p.inner_colour,
        "lower": p.lower_colour,
        "shoes": p.shoes_colour,
        "bag": p.bag_colour,
    }
    out = {key: _jitter(PALETTE[name], rng) for key, name in names.items() if name is not None}
    out["hair"] = _jitter(HAIR_RGB.get(p.hair_colour or "", skin), rng, 8)
    out["skin"] = _jitter(skin, rng, 6)
    return out


def _legs(pen: Pen, p: "Identity", c: Dict[str, RGB], pose: Pose, hip: float) -> None:
    covered = {"trousers": 0.95, "shorts": 0.42}.get(p.lower_type or "", 0.0)
    for side, angle in zip((-1, 1), pose.legs):
        top = (side * 4.4, 51.0)
        end = _along(top, 45.5, angle, side)
        pen.limb(top, end, 7.4, 5.2, c["skin"])
        if covered:
            pen.limb(top, _lerp(top, end, covered), 8.2, 6.0 if covered > 0.5 else 7.8, c["lower"])
        pen.ellipse(end[0] + side * 0.8, 98.2, 3.4, 2.0, c["shoes"])
    if covered:
        pen.poly([(-hip, 47), (hip, 47), (hip + 0.3, 56), (-hip - 0.3, 56)], c["lower"])
    elif p.lower_type == "skirt":
        pen.poly([(-hip + 0.5, 47), (hip - 0.5, 47), (hip + 4.5, 76), (-hip - 4.5, 76)], c["lower"])


def _torso(pen: Pen, p: "Identity", c: Dict[str, RGB], pose: Pose, build: Dict[str, float]) -> None:
    sw, ww, hip = build["shoulder"], build["waist"], build["hip"]
    bottom, flare = HEM[p.upper_type]
    up = c["upper"]
    pen.poly(
        [
            (-sw, 17),
            (sw, 17),
            (sw - 1.2, 25),
            (ww, 42),
            (hip + flare, bottom),
            (-hip - flare, bottom),
            (-ww, 42),
            (-sw + 1.2, 25),
        ],
        up,
    )
    for side in (-1, 1):
        pen.ellipse(side * (sw - 2.2), 19.5, 2.8, 2.8, up, outline=False)
    if pose.back_view:
        if p.upper_type == "coat":
            pen.limb((0, 30), (0, bottom), 0.5, 0.5, _dark(up))
        return
    if p.upper_type == "jacket":
        pen.poly([(-2.9, 17), (2.9, 17), (2.3, bottom), (-2.3, bottom)], c["inner"])
    elif p.upper_type == "coat":
        for y in range(25, bottom - 6, 8):
            pen.ellipse(0, y, 0.7, 0.7, _dark(up, 0.5), outline=False)
    else:
        pen.ellipse(0, 16.6, 2.6, 1.6, c["skin"], outline=False)


def _arms(pen: Pen, p: "Identity", c: Dict[str, RGB], pose: Pose, sw: float) -> Point:
    long_sleeves = p.upper_type in ("shirt", "jacket", "coat")
    wrist = (0.0, 0.0)
    for side, angle, bend in zip((-1, 1), pose.arms, pose.bends):
        if side == 1 and p.bag_type == "handbag":
            angle, bend = min(angle, 10.0), 0.0
        shoulder = (side * (sw - 2.2), 19.5)
        elbow = _along(shoulder, 16.5, angle, side)
        wrist = _along(elbow, 15.0, angle - bend, side)
        sleeve = c["upper"] if long_sleeves else c["skin"]
        pen.limb(shoulder, elbow, 4.8, 4.2, sleeve)
        pen.limb(elbow, wrist, 4.2, 3.6, sleeve)
        if not long_sleeves:
            pen.limb(shoulder, _lerp(shoulder, elbow, 0.5), 5.6, 5.2, c["upper"])
        pen.ellipse(wrist[0], wrist[1] + 1.2, 2.1, 2.4, c["skin"])
    return wrist


def _hair_behind(pen: Pen, p: "Identity", c: Dict[str, RGB], pose: Pose) -> None:
    if pose.back_view or p.hair_style == "bald":
        return
    if p.hair_style == "long":
        pen.poly([(-6.6, 3), (6.6, 3), (7.4, 28), (-7.4, 28)], c["hair"])
    elif p.hair_style == "ponytail":
        pen.limb((4.5, 4.5), (7.5, 15), 3.6, 2.0, c["hair"])


def _head(pen: Pen, p: "Identity", c: Dict[str, RGB], pose: Pose) -> None:
    pen.limb((0, 10), (0, 17), 4.4, 4.6, c["skin"])
    pen.ellipse(0, 7, 4.9, 6.0, c["skin"])
    hair, style = c["hair"], p.hair_style
    if style == "bun":
        pen.ellipse(0, 0.8, 2.8, 2.4, hair)
    if pose.back_view and style != "bald":
        pen.ellipse(0, 6.2, 5.2, 5.8, hair)
        if style == "long":
            pen.poly([(-6.2, 6), (6.2, 6), (7.2, 28), (-7.2, 28)], hair)
        elif style == "ponytail":
            pen.limb((0, 8), (0.8, 21), 3.4, 1.8, hair)
        return
    if style != "bald":
        pen.cap(0, 5.4, 5.5, 5.0, hair)
    if style == "long":
        for side in (-1, 1):
            pen.poly([(side * 4.2, 3), (side * 6.4, 3), (side * 6.8, 17), (side * 4.6, 17)], hair)
    for side in (-1, 1):
        pen.ellipse(side * 1.8, 7.4, 0.6, 0.6, (40, 30, 28), outline=False)


def _bag(
    pen: Pen, p: "Identity", c: Dict[str, RGB], pose: Pose, sw: float, hip: float, hand: Point, behind: bool
) -> None:
    bag = c.get("bag")
    if bag is None:
        return
    if p.bag_type == "backpack":
        if behind and not pose.back_view:  # seen past the side and above the shoulder
            pen.poly([(sw - 9, 15), (sw - 3, 14), (sw + 5.5, 18), (sw + 6, 49), (sw - 9, 50)], bag)
        elif not behind and pose.back_view:
            pen.poly([(-7.8, 19), (7.8, 19), (8.4, 47), (-8.4, 47)], bag)
            pen.poly([(-5, 36), (5, 36), (5.2, 45), (-5.2, 45)], _dark(bag, 0.8))
        elif not behind:  # straps
            for side in (-1, 1):
                pen.limb((side * (sw - 4), 17), (side * (sw - 4.6), 42), 1.7, 1.5, bag)
    elif behind:
        return
    elif p.bag_type == "shoulder bag":
        pen.limb((-(sw - 3), 17), (hip, 50), 1.4, 1.4, bag)
        pen.poly([(hip - 2, 47), (hip + 5.5, 47), (hip + 5.8, 59), (hip - 2.2, 59)], bag)
    elif p.bag_type == "handbag":
        x, y = hand
        pen.limb((x - 1.8, y + 3.0), (x, y + 0.5), 0.8, 0.8, _dark(bag))
        pen.limb((x + 1.8, y + 3.0), (x, y + 0.5), 0.8, 0.8, _dark(bag))
        pen.poly([(x - 3.4, y + 3), (x + 3.4, y + 3), (x + 4.0, y + 10), (x - 4.0, y + 10)], bag)
        pen.ellipse(x, y + 1.2, 2.1, 2.4, c["skin"])


def draw_person(
    layer: Image.Image, p: "Identity", rng: np.random.Generator, pose: Pose, box: Tuple[float, float, float]
) -> None:
    """Draw ``p`` onto the RGBA ``layer``; ``box`` = (centre x, top y, pixels per body unit)."""
    pen = Pen(ImageDraw.Draw(layer), *box, pose.flip)
    build, c = BUILD[p.gender], _colours(p, rng)
    pen.ellipse(0, 99.6, 13, 2.0, (0, 0, 0, 70), outline=False)
    _bag(pen, p, c, pose, build["shoulder"], build["hip"], (0, 0), behind=True)
    _hair_behind(pen, p, c, pose)
    _legs(pen, p, c, pose, build["hip"])
    _torso(pen, p, c, pose, build)
    hand = _arms(pen, p, c, pose, build["shoulder"])
    _head(pen, p, c, pose)
    _bag(pen, p, c, pose, build["shoulder"], build["hip"], hand, behind=False)


def background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A float RGB array: flat, vertical gradient, stripes or wall + ground."""
    c1, c2 = (
        np.array(_jitter(BACKGROUND_RGB[int(i)], rng, 16), np.float32)
        for i in rng.choice(len(BACKGROUND_RGB), 2, replace=False)
    )
    ys = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
    xs = np.linspace(0, 1, width, dtype=np.float32)[None, :, None]
    kind = int(rng.integers(5))
    if kind == 0:
        t = np.zeros((height, 1, 1), np.float32)
    elif kind == 1:
        t = ys
    elif kind == 2:
        t = (np.floor(ys * rng.uniform(4, 14)) % 2) * 0.6
    elif kind == 3:
        t = (np.floor(xs * rng.uniform(2, 6) + rng.uniform()) % 2) * 0.5
    else:
        t = (ys > rng.uniform(0.6, 0.85)).astype(np.float32)
    return np.broadcast_to(c1 * (1 - t) + c2 * t, (height, width, 3)).copy()


def _camera(img: Image.Image, rng: np.random.Generator, size: Tuple[int, int]) -> Image.Image:
    img = img.resize((size[1], size[0]), Image.LANCZOS)
    if rng.random() < 0.3:
        img = img.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 0.8)) * size[0] / 192))
    arr = np.asarray(img, np.float32)
    mean = arr.mean()
    arr = (arr - mean) * rng.uniform(0.8, 1.15) + mean * rng.uniform(0.8, 1.2)
    arr += rng.normal(0, rng.uniform(2, 6), arr.shape)
    return Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8))


def render(
    p: "Identity", rng: np.random.Generator, size: Tuple[int, int] = (192, 64), pose: Optional[Pose] = None
) -> Image.Image:
    """One RGB image of height ``size[0]`` and width ``size[1]`` of ``p``, jittered by ``rng``."""
    height, width = size[0] * SUPERSAMPLE, size[1] * SUPERSAMPLE
    pose = pose or sample_pose(rng)
    canvas = Image.fromarray(background(rng, height, width).astype(np.uint8))
    layer = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    unit = height * rng.uniform(0.8, 0.95) / 100
    cx = width / 2 + rng.uniform(-0.08, 0.08) * width
    top = (height - 100 * unit) / 2 + rng.uniform(-0.03, 0.03) * height
    draw_person(layer, p, rng, pose, (cx, top, unit))
    layer = layer.rotate(pose.lean, Image.BICUBIC, center=(cx, top + 100 * unit))
    canvas.paste(layer, (0, 0), layer)
    return _camera(canvas, rng, size)
