"""Typed digits rendered from fonts that installed packages ship, for training and evaluation.

matplotlib ships DejaVu, STIX and Computer Modern TrueType files (`mpl-data/fonts/ttf/`,
licences beside them) and Pillow has a built-in scalable font (Aileron). Whole typeface FAMILIES
are held out of training (`HELD_OUT_FAMILIES`), so the font evaluation measures digits in
letterforms the model never saw, not new renders of familiar glyphs.

Training renders are augmented the standard way for this model class (affine jitter, stroke
thickness, blur, noise, ink and paper levels, polarity, offset); evaluation renders are clean, at
fixed sizes and offsets, in both polarities. Everything here is raw 8-bit grayscale pixels: the
model's own preprocessing (service/preprocess/digit.py) is applied afterwards, as in serving.
Needs numpy, Pillow and matplotlib's data files only (no torch).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from training import fingerprint


@dataclass(frozen=True)
class DigitFont:
    """One font file (or Pillow's built-in font) and the typeface family it belongs to."""

    family: str
    style: str
    file: str | None  # a file in matplotlib's fonts/ttf directory; None: Pillow's default font

    def load(self, size: int) -> ImageFont.FreeTypeFont:
        return _load_font(self.file, size)

    @property
    def name(self) -> str:
        return f"{self.family} {self.style}"


@functools.cache
def font_dir() -> Path:
    """matplotlib's bundled TrueType directory."""
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


@functools.lru_cache(maxsize=512)
def _load_font(file: str | None, size: int) -> ImageFont.FreeTypeFont:
    if file is None:
        font = ImageFont.load_default(size=size)
        assert isinstance(font, ImageFont.FreeTypeFont), "Pillow was built without FreeType"
        return font
    return ImageFont.truetype(str(font_dir() / file), size)


# Every bundled font whose '0'-'9' are digits. Left out on purpose: cmex10 and cmsy10 map the
# digit code points to brackets and math symbols, LastResortHE draws placeholder boxes, and the
# STIXNonUnicode/STIXSize*/Display files have no digit glyphs.
FONTS: tuple[DigitFont, ...] = (
    DigitFont("DejaVu Sans", "Book", "DejaVuSans.ttf"),
    DigitFont("DejaVu Sans", "Bold", "DejaVuSans-Bold.ttf"),
    DigitFont("DejaVu Sans", "Oblique", "DejaVuSans-Oblique.ttf"),
    DigitFont("DejaVu Sans", "Bold Oblique", "DejaVuSans-BoldOblique.ttf"),
    DigitFont("DejaVu Sans Mono", "Book", "DejaVuSansMono.ttf"),
    DigitFont("DejaVu Sans Mono", "Bold", "DejaVuSansMono-Bold.ttf"),
    DigitFont("DejaVu Sans Mono", "Oblique", "DejaVuSansMono-Oblique.ttf"),
    DigitFont("DejaVu Sans Mono", "Bold Oblique", "DejaVuSansMono-BoldOblique.ttf"),
    DigitFont("DejaVu Serif", "Book", "DejaVuSerif.ttf"),
    DigitFont("DejaVu Serif", "Bold", "DejaVuSerif-Bold.ttf"),
    DigitFont("DejaVu Serif", "Italic", "DejaVuSerif-Italic.ttf"),
    DigitFont("DejaVu Serif", "Bold Italic", "DejaVuSerif-BoldItalic.ttf"),
    DigitFont("STIXGeneral", "Regular", "STIXGeneral.ttf"),
    DigitFont("STIXGeneral", "Bold", "STIXGeneralBol.ttf"),
    DigitFont("STIXGeneral", "Italic", "STIXGeneralItalic.ttf"),
    DigitFont("STIXGeneral", "Bold Italic", "STIXGeneralBolIta.ttf"),
    DigitFont("Computer Modern Roman", "Regular", "cmr10.ttf"),
    DigitFont("Computer Modern Roman", "Bold", "cmb10.ttf"),
    DigitFont("Computer Modern Roman", "Italic", "cmti10.ttf"),
    DigitFont("Computer Modern Roman", "Math Italic (old-style figures)", "cmmi10.ttf"),
    DigitFont("Computer Modern Sans", "Regular", "cmss10.ttf"),
    DigitFont("Computer Modern Typewriter", "Regular", "cmtt10.ttf"),
    DigitFont("Aileron (Pillow default font)", "Regular", None),
)

# Held out of training as whole families: a serif, a sans and a humanist sans.
HELD_OUT_FAMILIES = ("DejaVu Serif", "Computer Modern Sans", "Aileron (Pillow default font)")


def training_fonts() -> list[DigitFont]:
    return [f for f in FONTS if f.family not in HELD_OUT_FAMILIES]


def held_out_fonts() -> list[DigitFont]:
    return [f for f in FONTS if f.family in HELD_OUT_FAMILIES]


def render_ink(font: DigitFont, digit: int, size: int, stroke: int = 0) -> np.ndarray:
    """The glyph as ink coverage 0..255 (uint8) on 0, with a margin of one em around it."""
    canvas = Image.new("L", (3 * size, 3 * size), 0)
    ImageDraw.Draw(canvas).text(
        (1.5 * size, 1.5 * size),
        str(digit),
        fill=255,
        font=font.load(size),
        anchor="mm",
        stroke_width=stroke,
        stroke_fill=255,
    )
    return np.asarray(canvas)


def _crop_to_ink(ink: np.ndarray) -> np.ndarray:
    rows = np.flatnonzero(ink.max(axis=1) > 0)
    cols = np.flatnonzero(ink.max(axis=0) > 0)
    return ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def _on_paper(ink: np.ndarray, ink_level: float, paper_level: float) -> np.ndarray:
    """Coverage 0..255 -> grey levels: paper where there is no ink, ink where coverage is full."""
    coverage = ink.astype(np.float32) / 255.0
    return paper_level + (ink_level - paper_level) * coverage


# --- evaluation renders ---------------------------------------------------------------------

EVAL_SIZES = (12, 20, 32, 64)  # font size in pixels
EVAL_OFFSETS = ("centre", "top-left", "bottom-right")
POLARITIES = ("dark_on_light", "light_on_dark")


@dataclass(frozen=True)
class Rendered:
    """Raw images with their labels and one id per item saying what each is."""

    images: list[np.ndarray]
    labels: np.ndarray
    ids: list[str]


def place(glyph: np.ndarray, offset: str) -> np.ndarray:
    """The cropped glyph on a canvas twice its size, at the centre or pushed into a corner."""
    height, width = glyph.shape
    canvas = np.zeros((2 * height + 4, 2 * width + 4), dtype=np.uint8)
    top, left = {
        "centre": ((height + 4) // 2, (width + 4) // 2),
        "top-left": (2, 2),
        "bottom-right": (height + 2, width + 2),
    }[offset]
    canvas[top : top + height, left : left + width] = glyph
    return canvas


def held_out_font_digits(polarity: str) -> Rendered:
    """Every held-out font x digit x size x offset, clean, black on white or white on black."""
    ink_level, paper_level = (0.0, 255.0) if polarity == "dark_on_light" else (255.0, 0.0)
    images, labels, ids = [], [], []
    for font in held_out_fonts():
        for size in EVAL_SIZES:
            for digit in range(10):
                glyph = _crop_to_ink(render_ink(font, digit, size))
                for offset in EVAL_OFFSETS:
                    pixels = _on_paper(place(glyph, offset), ink_level, paper_level)
                    images.append(np.round(pixels).astype(np.uint8))
                    labels.append(digit)
                    ids.append(f"{font.family}/{font.style}/{size}px/{offset}/{digit}")
    rendered = Rendered(images, np.asarray(labels, dtype=np.int64), ids)
    fingerprint.record(
        f"digits held-out fonts {polarity.replace('_', ' ')}",
        "matplotlib",
        "held-out font families (matplotlib's and Pillow's fonts) x sizes x offsets, clean",
        rendered,
    )
    return rendered


# --- augmented training renders -----------------------------------------------------------


def _affine(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Random rotation (+-12 deg), shear (+-0.25) and aspect (0.8-1.2) about the image centre."""
    angle = math.radians(rng.uniform(-12, 12))
    shear = rng.uniform(-0.25, 0.25)
    aspect = rng.uniform(0.8, 1.2)
    cos, sin = math.cos(angle), math.sin(angle)
    # forward map: rotate @ shear @ scale(aspect, 1); Pillow wants the inverse (output -> input)
    forward = np.array([[cos, -sin], [sin, cos]]) @ np.array([[1, shear], [0, 1]])
    forward = forward @ np.diag([aspect, 1.0])
    inverse = np.linalg.inv(forward)
    cx, cy = image.width / 2, image.height / 2
    shift = np.array([cx, cy]) - inverse @ np.array([cx, cy])
    coefficients = (inverse[0, 0], inverse[0, 1], shift[0], inverse[1, 0], inverse[1, 1], shift[1])
    return image.transform(
        image.size, Image.Transform.AFFINE, coefficients, Image.Resampling.BILINEAR
    )


def augment(ink: np.ndarray, rng: np.random.Generator, thinning: bool = False) -> np.ndarray:
    """Ink coverage (uint8, ink 255 on 0, margin around it) -> one photo-like 8-bit image.

    Affine jitter, thinning (only where strokes are thick enough to survive it), blur, a random
    crop that moves the digit off-centre, ink and paper grey levels of either polarity, noise.
    """
    image = _affine(Image.fromarray(ink), rng)
    if thinning and rng.random() < 0.3:
        image = image.filter(ImageFilter.MinFilter(3))  # thinner strokes
    if rng.random() < 0.5:  # up to 1.5 px, less on small glyphs so strokes keep their contrast
        radius = rng.uniform(0.3, min(1.5, image.height / 50))
        image = image.filter(ImageFilter.GaussianBlur(radius))
    coverage = np.asarray(image)
    rows = np.flatnonzero(coverage.max(axis=1) > 32)
    cols = np.flatnonzero(coverage.max(axis=0) > 32)
    if len(rows) == 0:  # the jitter cannot remove a whole glyph, but stay safe
        rows, cols = np.arange(coverage.shape[0]), np.arange(coverage.shape[1])
    height, width = rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1

    # margins of 10..60% of the glyph on each side, drawn independently: an off-centre digit
    def margin(extent: int) -> int:
        return int(rng.integers(max(2, extent // 10), max(3, 6 * extent // 10)))

    top, bottom = rows[0] - margin(height), rows[-1] + margin(height)
    left, right = cols[0] - margin(width), cols[-1] + margin(width)
    padded = np.pad(coverage, max(coverage.shape))
    shift = max(coverage.shape)
    crop = padded[top + shift : bottom + shift + 1, left + shift : right + shift + 1]

    paper = rng.uniform(180, 255)
    ink_level = rng.uniform(0, 80)
    if rng.random() < 0.5:  # light ink on a dark ground
        paper, ink_level = 255 - paper, 255 - ink_level
    pixels = _on_paper(crop, ink_level, paper)
    if rng.random() < 0.5:
        pixels = pixels + rng.normal(0, rng.uniform(2, 8), size=pixels.shape)
    return np.clip(np.round(pixels), 0, 255).astype(np.uint8)


def training_font_digits(renders_per_glyph: int, seed: int) -> Rendered:
    """Augmented renders of every training font's ten digits at random sizes and stroke weights."""
    rng = np.random.default_rng(seed)
    images, labels, ids = [], [], []
    for font in training_fonts():
        for digit in range(10):
            for n in range(renders_per_glyph):
                size = int(rng.integers(14, 72))
                stroke = int(rng.choice([0, 0, 0, 1, 2])) if size >= 32 else 0
                ink = render_ink(font, digit, size, stroke)
                images.append(augment(ink, rng, thinning=size >= 48 and stroke == 0))
                labels.append(digit)
                ids.append(f"{font.family}/{font.style}/{digit}/{n}")
    rendered = Rendered(images, np.asarray(labels, dtype=np.int64), ids)
    fingerprint.record(
        "digits font renders train",
        "matplotlib",
        f"training font families (matplotlib's and Pillow's fonts), {renders_per_glyph} "
        f"augmented renders per glyph, seed {seed}",
        rendered,
    )
    return rendered


def augmented_scans(images: np.ndarray, copies: int, seed: int) -> list[np.ndarray]:
    """Jittered copies of 8x8 scanned digits (ink bright on dark), upscaled to 32x32 first."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(copies):
        for pixels in images:
            big = Image.fromarray(pixels).resize((24, 24), Image.Resampling.BILINEAR)
            ink = np.pad(np.asarray(big), 12)
            out.append(augment(ink, rng))
    fingerprint.record(
        "digits jittered scans train",
        "scikit-learn",
        f"the train part, {copies} jittered copies each, seed {seed}",
        out,
    )
    return out
