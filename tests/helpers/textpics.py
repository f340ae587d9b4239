"""Pictures with known text in them (Chinese and English), rendered with a CJK font from Debian.

`.ci/run` installs fonts-wqy-zenhei; `CJK_FONT` finds it (or Noto CJK). The real RapidOCR models
read these pictures in the OCR tests, so each line is large, dark on light, and well spaced.
"""

from __future__ import annotations

import random
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

FONT_CANDIDATES = (
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
)


def cjk_font() -> str | None:
    return next((f for f in FONT_CANDIDATES if Path(f).exists()), None)


def require_cjk_font() -> str:
    """The font, or a skip (a failure with CLIPDEX_REQUIRE_FONTS=1, as `.ci/run` sets)."""
    import os

    import pytest

    font = cjk_font()
    if font is None:
        reason = "no CJK font: apt-get install fonts-wqy-zenhei"
        if os.environ.get("CLIPDEX_REQUIRE_FONTS", "") not in ("", "0"):
            pytest.fail(reason + " (CLIPDEX_REQUIRE_FONTS=1)")
        pytest.skip(reason)
    return font


def text_picture(path: Path, lines: list[str], size: tuple[int, int] = (640, 320), seed: int = 0) -> Path:
    """``lines`` in black on a light, slightly noisy background (a picture, not a blank page)."""
    rng = random.Random(seed)
    bg = tuple(rng.randint(215, 250) for _ in range(3))
    img = Image.new("RGB", size, bg)
    draw = ImageDraw.Draw(img)
    for _ in range(12):  # a few soft shapes so CLIP sees something besides the words
        x, y = rng.randint(0, size[0]), rng.randint(0, size[1])
        r = rng.randint(10, 40)
        shade = tuple(max(0, c - rng.randint(10, 30)) for c in bg)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=shade)
    font = ImageFont.truetype(cjk_font(), 40)
    y = 30
    for line in lines:
        draw.text((30, y), line, fill=(10, 10, 10), font=font)
        y += 80
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path
