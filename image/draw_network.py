"""Draws image/network.png, the README's diagram of the PromptIQA network: python image/draw_network.py"""
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

BOXES = {  # name: (x, y, width, text, colour)
    "img": (0.2, 4.2, 1.6, "image\n224x224", "#eeeeee"),
    "vit": (2.3, 4.2, 1.9, "ViT-B/8\nblocks 2, 5, 8, 11\n4 maps 768x28x28", "#cfe2f3"),
    "mal": (4.7, 4.2, 1.9, "3 x MAL (4 maps)\n+ fusion MAL (3)", "#d9ead3"),
    "blk": (7.1, 4.2, 1.7, "ViT block\n+ CNN\n-> g (128)", "#d9ead3"),
    "isp": (0.2, 1.6, 1.6, "prompt ISPs\n(image, score)", "#eeeeee"),
    "enc": (2.3, 1.6, 1.9, "same image path -> g\n[g; score x128]\n3 blocks, mean, MLP", "#fce5cd"),
    "pf": (4.7, 1.6, 1.9, "prompt fusion\n3 blocks\nn prompt vectors", "#fce5cd"),
    "dec": (7.1, 1.6, 1.7, "[g; prompts]\n8 blocks, norm\nscore head", "#f4cccc"),
    "out": (9.2, 1.6, 1.2, "quality\nin [0, 1]", "#eeeeee"),
}
ARROWS = [("img", "vit"), ("vit", "mal"), ("mal", "blk"), ("isp", "enc"), ("enc", "pf"), ("pf", "dec"),
          ("dec", "out"), ("blk", "dec")]
HEIGHT = 1.2


def centre(name: str, side: str) -> tuple[float, float]:
    x, y, w, _, _ = BOXES[name]
    return {"right": (x + w, y + HEIGHT / 2), "left": (x, y + HEIGHT / 2), "bottom": (x + w / 2, y)}[side]


def main() -> None:
    fig, ax = plt.subplots(figsize=(11, 4.6), dpi=110)
    for x, y, w, text, colour in BOXES.values():
        ax.add_patch(FancyBboxPatch((x, y), w, HEIGHT, boxstyle="round,pad=0.05", fc=colour, ec="#555555"))
        ax.text(x + w / 2, y + HEIGHT / 2, text, ha="center", va="center", fontsize=8.5)
    for a, b in ARROWS:
        if a == "blk":  # the query feature g goes down into the scorer
            start, end = centre(a, "bottom"), (centre(b, "left")[0] + 0.6, BOXES[b][1] + HEIGHT)
        else:
            start, end = centre(a, "right"), centre(b, "left")
        ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=12, color="#333333"))
    ax.text(0.2, 5.9, "query image -> quality feature g", fontsize=10, weight="bold")
    ax.text(0.2, 3.3, "prompts: a few image-score pairs express the requirement (encoded once, cached)",
            fontsize=10, weight="bold")
    ax.set(xlim=(0, 10.6), ylim=(1.2, 6.3))
    ax.axis("off")
    fig.tight_layout()
    fig.savefig(Path(__file__).with_name("network.png"))


if __name__ == "__main__":
    main()
