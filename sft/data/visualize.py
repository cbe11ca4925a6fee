"""Pictures of the data as the model sees it: one sample's trained tokens, and a few packs.

`render_sample` colours a tokenized conversation token by token (the best check of label
masking): trained tokens green, untrained tokens grey, alternating shades mark token boundaries.

`draw_layout` draws rows of segments as horizontal bars, one colour per sample:

    pack 0 |AAAAaaaaaa|BBBbbb|CCcccccc|DDddd|....|     capital = prompt (untrained, pale),
    pack 1 |EEEEEeeeeeeee|FFFfff|GGGGggggggg|...|      lower case = trained tokens (full colour),
                                                       . = padding (grey)

Invariant: every token of every segment is drawn exactly once, at its position in the row; a
row's grey part is exactly `width - sum(segment lengths)` tokens.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path

import numpy as np

Segment = tuple[int, int, int]  # (start, end, piece) in the flat token arrays

TRAINED = ("bold green", "bold dark_green")
UNTRAINED = ("grey50", "grey35")


def token_texts(tokenizer, ids: Sequence[int]) -> list[str]:
    """The text of every token; concatenated, they give the decoded sample.

    A token holding only part of a multi-byte character gets "" and the token completing the
    character gets all of it. Each token is decoded after a few tokens of context, so tokenizers
    that drop a leading space at the start of a decode keep it here.
    """
    ids = [int(i) for i in ids]
    texts: list[str] = []
    done = 0  # tokens [0, done) are emitted
    for i in range(len(ids)):
        lo = max(0, done - 4)
        head = tokenizer.decode(ids[lo:done], skip_special_tokens=False) if done > lo else ""
        cur = tokenizer.decode(ids[lo : i + 1], skip_special_tokens=False)
        if cur.endswith("\ufffd") and i + 1 < len(ids) and i + 1 - done < 8:
            texts.append("")  # an incomplete character: emitted with the token that completes it
            continue
        texts.append(cur[len(head) :])
        done = i + 1
    return texts


def render_sample(tokenizer, ids: Sequence[int], trained: Sequence[bool]):
    """A `rich.text.Text` of the sample: trained tokens green, the rest grey, shades alternating."""
    from rich.text import Text

    text = Text()
    for k, (piece, t) in enumerate(zip(token_texts(tokenizer, ids), trained)):
        style = (TRAINED if t else UNTRAINED)[k % 2]
        text.append(piece, style=style)
    return text


def runs(flags: np.ndarray) -> list[tuple[int, int, bool]]:
    """Maximal runs (start, end, value) of a boolean array."""
    if len(flags) == 0:
        return []
    cuts = np.flatnonzero(np.diff(flags.astype(np.int8))) + 1
    bounds = [0, *cuts.tolist(), len(flags)]
    return [(a, b, bool(flags[a])) for a, b in itertools.pairwise(bounds)]


# tab10 without its grey, so no sample looks like padding
PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#bcbd22",
    "#17becf",
)


def draw_layout(
    ax,
    rows: Sequence[Sequence[Segment]],
    mask: np.ndarray,
    width: int,
    title: str,
    labels: Sequence[str] | None = None,
    color_offset: int = 0,
    xlim: int | None = None,
) -> int:
    """Draw `rows` on the matplotlib axes `ax`; returns the number of segments drawn.

    A segment's tokens carry a trained target or not (`mask[a:b]`, with the first token of every
    segment never a target): trained tokens in full colour, the rest pale; the rest of the row up
    to `width` in grey (padding). The x axis runs to `xlim` (default `width`).
    """
    n_drawn = 0
    for r, row in enumerate(rows):
        y = len(rows) - 1 - r
        x = 0
        for a, b, _piece in row:
            color = PALETTE[(color_offset + n_drawn) % len(PALETTE)]
            flags = mask[a:b].copy()
            flags[0] = False
            for s, e, t in runs(flags):
                ax.barh(
                    y,
                    e - s,
                    left=x + s,
                    height=0.8,
                    color=color,
                    alpha=1.0 if t else 0.35,
                    edgecolor="none",
                )
            ax.barh(y, b - a, left=x, height=0.8, fill=False, edgecolor="white", linewidth=1.2)
            x += b - a
            n_drawn += 1
        if x < width:
            ax.barh(
                y,
                width - x,
                left=x,
                height=0.8,
                color="0.88",
                edgecolor="0.6",
                linewidth=0,
                hatch="///",
            )
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(list(labels or [f"row {i}" for i in range(len(rows))])[::-1])
    ax.set_xlim(0, xlim or width)
    ax.set_xlabel("token position in the row")
    ax.set_title(title, loc="left", fontsize=10)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    return n_drawn


def save_figure(fig, out: str | Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=130, bbox_inches="tight")
    return out
