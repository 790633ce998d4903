"""Draw the SpineSeg icon (128x128 PNG): a column of colour-coded vertebrae with a lesion spot.

    python docs/tools/draw_icon.py

writes SpineSegModule/Resources/Icons/SpineSeg.png and SpineSegExtension/SpineSeg.png (the same picture).
"""

import json
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

ROOT = Path(__file__).resolve().parents[2]
SIZE, SCALE = 128, 4  # drawn 4x larger, then downsampled for smooth edges


def label_colours() -> list[tuple[int, int, int]]:
    table = json.loads((ROOT / "Resources" / "labels.json").read_text())
    by_name = {d["name"]: tuple(d["color"]) for d in table["labels"]}
    return [by_name[name] for name in ("C5", "T2", "T7", "T11", "L2", "L4")]


def draw() -> Image.Image:
    s = SCALE
    image = Image.new("RGBA", (SIZE * s, SIZE * s), (0, 0, 0, 0))
    d = ImageDraw.Draw(image)
    colours = label_colours()[1:]
    n = len(colours)
    top, bottom = 6 * s, 122 * s
    step = (bottom - top) / n
    centres = []
    for i, colour in enumerate(colours):
        y0 = top + i * step
        height = step * 0.80
        width = (50 + 5 * i) * s  # vertebrae grow towards the lumbar spine
        cx = 52 * s + int(6 * s * (1 - ((i - (n - 1) / 2) / ((n - 1) / 2)) ** 2))  # a gentle curve
        centres.append((cx, y0 + height * 0.45))
        outline = tuple(max(0, c - 80) for c in colour)
        # spinous process: a tapered wedge behind the body (to the right)
        right = cx + width // 2
        d.polygon([(right - 6 * s, y0 + height * 0.22), (right + 24 * s, y0 + height * 0.55),
                   (right + 24 * s, y0 + height * 0.80), (right - 6 * s, y0 + height * 0.78)],
                  fill=colour + (255,), outline=outline, width=2 * s)
        d.rounded_rectangle([cx - width // 2, y0, right, y0 + height], radius=8 * s,
                            fill=colour + (255,), outline=outline, width=3 * s)
        if i < n - 1:  # intervertebral disc
            d.rounded_rectangle([cx - width // 2 + 4 * s, y0 + height + 1.5 * s, right - 4 * s,
                                 y0 + step - 1.5 * s], radius=2 * s, fill=(210, 214, 228, 255))
    # a lesion in one body: a red spot with a glow
    cx, y = centres[3]
    glow = Image.new("RGBA", image.size, (0, 0, 0, 0))
    ImageDraw.Draw(glow).ellipse([cx - 15 * s, y - 15 * s, cx + 15 * s, y + 15 * s], fill=(255, 40, 40, 210))
    glow = glow.filter(ImageFilter.GaussianBlur(5 * s))
    image = Image.alpha_composite(image, glow)
    ImageDraw.Draw(image).ellipse([cx - 7 * s, y - 7 * s, cx + 7 * s, y + 7 * s], fill=(235, 20, 20, 255),
                                  outline=(110, 0, 0, 255), width=2 * s)
    return image.resize((SIZE, SIZE), Image.LANCZOS)


def main() -> None:
    icon = draw()
    for target in (ROOT / "SpineSegModule" / "Resources" / "Icons" / "SpineSeg.png",
                   ROOT / "SpineSegExtension" / "SpineSeg.png"):
        target.parent.mkdir(parents=True, exist_ok=True)
        icon.save(target, optimize=True)
        print(f"wrote {target}")


if __name__ == "__main__":
    main()
