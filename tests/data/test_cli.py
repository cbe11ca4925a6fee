"""`sft-data show | packs | stats` on the tiny tokenizer and the demo data."""

from __future__ import annotations

import json
import subprocess
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pytest

from sft.data.cli import load, main, packs_picture
from sft.data.visualize import draw_layout, render_sample, token_texts
from tests.conftest import ROOT

# max_length above every demo sample under the byte-level tokenizer: nothing truncated
DATA = ["model=tiny", "data=demo", "data.demo_size=60", "data.max_length=4096"]


@pytest.fixture(scope="module")
def loaded():
    return load(DATA)


def _exit_code(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as e:
        main(argv)
    return e.value.code


def test_show_prints_the_sample_with_its_trained_span(capsys, loaded):
    main(["show", *DATA, "--index", "2"])
    out = capsys.readouterr().out
    row, a, b = (int(x) for x in loaded.data.train[2])
    text = loaded.tokenizer.decode(loaded.data.tokens.ids[a:b].tolist())
    assert f"train sample 2 (demo[{row}]): {b - a} tokens" in out
    assert text.split("\n")[1][:40] in out  # the user prompt's first line is shown


def test_render_sample_colours_exactly_the_trained_tokens(loaded, tiny_tokenizer):
    _, a, b = (int(x) for x in loaded.data.train[0])
    ids = loaded.data.tokens.ids[a:b]
    trained = loaded.data.tokens.mask[a:b]
    assert 0 < trained.sum() < len(ids)  # a prompt and an answer: both styles appear
    text = render_sample(tiny_tokenizer, ids, trained)
    assert text.plain == tiny_tokenizer.decode(ids.tolist())  # every token, once, in order
    green = "".join(text.plain[s.start : s.end] for s in text.spans if "green" in str(s.style))
    assert green == tiny_tokenizer.decode(ids[trained].tolist())
    assert green.endswith("<|im_end|>")  # the end-of-turn token is trained


def test_token_texts_survive_multibyte_characters(tiny_tokenizer):
    ids = tiny_tokenizer("naïve café ✓", add_special_tokens=False)["input_ids"]
    assert len(ids) > len("naïve café ✓")  # bytes, not characters
    assert "".join(token_texts(tiny_tokenizer, ids)) == "naïve café ✓"


def test_show_index_out_of_range_is_one_line(capsys):
    assert _exit_code(["show", *DATA, "--index", "100000"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --index 100000 is out of range") and "\n" not in err


@pytest.mark.parametrize(
    "argv,message",
    [
        (["show", "data=nope", "model=tiny"], "data=nope is not an option"),
        (["stats", "model=tiny", "data.max_lenght=5"], "max_lenght"),
        (["show", "model=tiny", "lima"], "'lima' is not an override"),
    ],
)
def test_bad_input_is_one_line_exit_2(capsys, argv, message):
    assert _exit_code(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err


def test_packs_writes_a_png(tmp_path, capsys):
    out = tmp_path / "sub" / "packs.png"
    main(["packs", *DATA, "--out", str(out), "--n-packs", "3", "--batch-size", "4"])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"wrote {out}: 3 packs" in capsys.readouterr().out


def test_packs_picture_counts(tmp_path, loaded):
    info = packs_picture(loaded, str(tmp_path / "p.png"), n_packs=4, batch_size=8)
    assert info["packs"] == 4 and info["pack_samples"] >= 8  # non-trivial packs
    assert info["capacity"] == 4096 and info["strategy"] == "bfd"
    assert 0.9 < info["pack_fill"] <= 1.0
    assert 0.0 < info["padding_pad_fraction"] < 1.0


def test_draw_layout_draws_every_token_once(loaded):
    rows = [
        [tuple(int(x) for x in loaded.data.train[i])[1:] + (i,) for i in (0, 1, 2)],
        [tuple(int(x) for x in loaded.data.train[3])[1:] + (3,)],
    ]
    width = 2 + max(sum(b - a for a, b, _ in row) for row in rows)
    fig, ax = plt.subplots()
    assert draw_layout(ax, rows, loaded.data.tokens.mask, width, "t") == 4
    filled = [p for p in ax.patches if p.get_fill()]
    per_row = {}
    for p in filled:
        per_row.setdefault(round(p.get_y() + p.get_height() / 2), []).append(p.get_width())
    for r, row in enumerate(rows):
        widths = per_row[len(rows) - 1 - r]
        assert sum(widths) == width  # samples + padding cover the row exactly
        assert sum(widths) - (width - sum(b - a for a, b, _ in row)) == sum(
            b - a for a, b, _ in row
        )
    plt.close(fig)


def test_stats_json(capsys, loaded):
    main(["stats", *DATA, "train.micro_batch_size=4", "--batch-size", "8", "--json"])
    s = json.loads(capsys.readouterr().out)
    lengths = loaded.data.train[:, 2] - loaded.data.train[:, 1]
    assert s["samples"] == len(lengths) and s["tokens"] == int(lengths.sum())
    pad = s["padding"]
    assert pad["padded_over_real"] > 1.2  # demo lengths vary a lot
    assert 1.0 <= pad["padded_over_real_group_by_length"] < pad["padded_over_real"]
    for name, r in s["packing"].items():
        assert r["packs"] >= r["lower_bound"] == -(-int(lengths.sum()) // 4096)
        assert 0 < r["efficiency"] <= 1
        if name != "random_concat":
            assert r["dropped_tokens"] == 0 and r["dropped_fragments"] == 0
    assert s["packing"]["bfd"]["efficiency"] >= s["packing"]["next_fit"]["efficiency"]
    st = s["steps_per_epoch"]
    assert st["padding"] == -(-len(lengths) // 4)  # one process: every sample, 4 per step
    assert st["packing"] < st["padding"]  # packs of several samples: fewer optimizer steps
    assert np.isclose(st["samples_per_step_padding"] * st["padding"], len(lengths))


def test_stats_table(capsys):
    main(["stats", *DATA])
    out = capsys.readouterr().out
    assert (
        "padding, random micro-batches of 8" in out
        and "bfd" in out
        and "optimizer steps per epoch" in out
    )


@pytest.mark.slow
def test_module_entry_point_exit_code():
    proc = subprocess.run(
        [sys.executable, "-m", "sft.data.cli", "show", "model=tiny", "data=nope"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: data=nope is not an option")


TEMPLATE = (
    "{% for m in messages %}### {{ m['role'] | upper }}: {{ m['content'] }} ###\n{% endfor %}"
    "{% if add_generation_prompt %}### ASSISTANT: {% endif %}"
)


def test_sft_data_and_the_trainer_see_the_same_tokens_with_a_custom_chat_template(tmp_path, capsys):
    """model.chat_template reaches sft-data exactly as it reaches the trainer."""
    from sft.cli_config import compose_job
    from sft.trainer import Recipe

    template = tmp_path / "t.jinja"
    template.write_text(TEMPLATE)
    overrides = [*DATA, f"model.chat_template={template}", "data.val_fraction=0"]
    shown = load(overrides)
    default = load([*DATA, "data.val_fraction=0"])
    first = shown.data.tokens.ids[shown.data.train[0, 1] : shown.data.train[0, 2]]
    assert "### USER: " in shown.tokenizer.decode(first.tolist())  # the custom template is used
    assert len(shown.data.tokens.ids) != len(default.data.tokens.ids)
    cfg, yaml = compose_job([*overrides, "train.max_steps=1", f"run_dir={tmp_path / 'run'}"])
    recipe = Recipe(cfg, yaml)
    try:
        trained = recipe.data
    finally:
        recipe.close()
    assert np.array_equal(trained.tokens.ids, shown.data.tokens.ids)
    assert np.array_equal(trained.tokens.targets, shown.data.tokens.targets)
    assert np.array_equal(trained.train, shown.data.train)
    main(["show", *overrides, "--index", "0"])
    assert "### USER: " in capsys.readouterr().out
