"""The embedded demo dataset: instruction/answer pairs with checkable answers.

Generated deterministically from a seed, so every machine trains on the same samples with no
download. Tasks vary in kind (arithmetic, unit conversion, sorting, counting, extraction,
formatting, list reversal) and in length (from ~20 to ~1,000 tokens), so padding wastes compute
the way real SFT data does, and every answer can be checked by exact match. The fact tasks
(sft/data/demo_facts.py: capitals, plurals, opposites) are outside the default mix; `make demo`
chooses them with `data.demo_tasks`.

Invariant: `generate_demo(...)` returns the same list for the same arguments (the default mix
never changes, so recorded runs reproduce); each row holds
`id`, `task`, `messages` (user, assistant) and `answer`, where the assistant content == answer.
"""

from __future__ import annotations

import random
import string

from sft.data.demo_facts import FACT_TASKS

WORDS = [
    "apple",
    "river",
    "stone",
    "cloud",
    "maple",
    "tiger",
    "amber",
    "delta",
    "harbor",
    "lantern",
    "meadow",
    "orbit",
    "pepper",
    "quartz",
    "raven",
    "saddle",
    "timber",
    "velvet",
    "willow",
    "yarrow",
    "zephyr",
    "beacon",
    "candle",
    "falcon",
    "garnet",
    "hollow",
    "island",
    "juniper",
    "kettle",
    "lemon",
    "marble",
    "nectar",
    "olive",
    "pebble",
    "quiver",
    "ribbon",
    "summit",
    "thistle",
    "umber",
    "violet",
    "walnut",
    "canyon",
    "ember",
    "forest",
    "glacier",
    "horizon",
    "ivory",
    "jasmine",
    "kayak",
    "lagoon",
    "mosaic",
    "nova",
    "oasis",
]
NAMES = [
    "Ada",
    "Ben",
    "Chloe",
    "Dev",
    "Elena",
    "Farid",
    "Greta",
    "Hugo",
    "Iris",
    "Jonas",
    "Kira",
    "Liam",
    "Mona",
    "Nils",
    "Olga",
    "Priya",
]
DOMAINS = ("example.com", "mail.org", "lab.net", "uni.edu")

UNITS = [  # (from, to, factor)
    ("kilometers", "meters", 1000),
    ("meters", "centimeters", 100),
    ("kilograms", "grams", 1000),
    ("hours", "minutes", 60),
    ("minutes", "seconds", 60),
    ("liters", "milliliters", 1000),
    ("days", "hours", 24),
    ("weeks", "days", 7),
]


def _arithmetic(r: random.Random) -> tuple[str, str]:
    a, b = r.randint(2, 999), r.randint(2, 999)
    op = r.choice(["+", "-", "*"])
    val = {"+": a + b, "-": a - b, "*": a * b}[op]
    return f"Compute {a} {op} {b}. Reply with the number only.", str(val)


def _conversion(r: random.Random) -> tuple[str, str]:
    src, dst, f = r.choice(UNITS)
    q = r.randint(1, 250)
    return f"Convert {q} {src} to {dst}. Reply with the number only.", str(q * f)


def _sorting(r: random.Random) -> tuple[str, str]:
    n = int(r.choice([r.randint(3, 12), r.randint(10, 60), r.randint(40, 100)]))
    nums = [r.randint(0, 9999) for _ in range(n)]
    return (
        "Sort these numbers in ascending order and reply with them separated by commas:\n"
        + ", ".join(map(str, nums)),
        ", ".join(map(str, sorted(nums))),
    )


def _counting(r: random.Random) -> tuple[str, str]:
    n = r.choice([r.randint(5, 20), r.randint(20, 120), r.randint(100, 350)])
    target = r.choice(WORDS[:12])
    words = [r.choice(WORDS[:16]) for _ in range(n)]
    return (
        f'How many times does the word "{target}" appear in the text below? Reply with the number only.\n'
        + " ".join(words),
        str(words.count(target)),
    )


def _extraction(r: random.Random) -> tuple[str, str]:
    n_sent = r.choice([r.randint(2, 6), r.randint(6, 25), r.randint(25, 40)])
    emails, sents = [], []
    for _ in range(n_sent):
        name = r.choice(NAMES)
        filler = " ".join(r.choice(WORDS) for _ in range(r.randint(4, 12)))
        if r.random() < 0.3:
            mail = f"{name.lower()}.{r.randint(1, 99)}@{r.choice(DOMAINS)}"
            emails.append(mail)
            sents.append(f"{name} wrote about the {filler} and can be reached at {mail}.")
        else:
            sents.append(f"{name} talked about the {filler}.")
    answer = "\n".join(emails) if emails else "none"
    return (
        "List every email address in the text below, one per line, in order of appearance "
        "(reply 'none' if there is none).\n" + " ".join(sents),
        answer,
    )


def _formatting(r: random.Random) -> tuple[str, str]:
    n = r.choice([r.randint(2, 5), r.randint(5, 30)])
    people = [(r.choice(NAMES), r.randint(18, 90), r.choice(WORDS)) for _ in range(n)]
    rows = "\n".join(f"{p} | {a} | {c}" for p, a, c in people)
    answer = "\n".join(f'{{"name": "{p}", "age": {a}, "city": "{c}"}}' for p, a, c in people)
    return (
        "Turn each row 'name | age | city' into a JSON object on its own line with keys name, age, city:\n"
        + rows,
        answer,
    )


def _reverse(r: random.Random) -> tuple[str, str]:
    n = r.choice([r.randint(3, 10), r.randint(10, 80)])
    items = [r.choice(WORDS) for _ in range(n)]
    return ("Reverse the order of these words:\n" + " ".join(items), " ".join(reversed(items)))


def _uppercase(r: random.Random) -> tuple[str, str]:
    n = r.randint(3, 40)
    text = " ".join(r.choice(WORDS) for _ in range(n))
    return "Rewrite the following text in upper case:\n" + text, text.upper()


def _acronym(r: random.Random) -> tuple[str, str]:
    n = r.randint(3, 8)
    words = [r.choice(WORDS).capitalize() for _ in range(n)]
    return "Give the acronym made of the first letters of: " + " ".join(words), "".join(
        w[0] for w in words
    )


def _caesar(r: random.Random) -> tuple[str, str]:
    word = "".join(r.choice(string.ascii_lowercase) for _ in range(r.randint(4, 10)))
    k = r.randint(1, 5)
    enc = "".join(chr((ord(c) - 97 + k) % 26 + 97) for c in word)
    return (
        f"Shift every letter of '{word}' forward by {k} in the alphabet. Reply with the result only.",
        enc,
    )


TASKS = {
    "arithmetic": _arithmetic,
    "conversion": _conversion,
    "sorting": _sorting,
    "counting": _counting,
    "extraction": _extraction,
    "formatting": _formatting,
    "reverse": _reverse,
    "uppercase": _uppercase,
    "acronym": _acronym,
    "caesar": _caesar,
    **FACT_TASKS,
}
# The mix `generate_demo` draws from by default; fixed, so recorded runs and tables reproduce.
DEFAULT_TASKS = (
    "arithmetic",
    "conversion",
    "sorting",
    "counting",
    "extraction",
    "formatting",
    "reverse",
    "uppercase",
    "acronym",
    "caesar",
)
# Short-answer tasks used for the exact-match check (cheap to generate on a CPU).
SHORT_ANSWER_TASKS = (
    "arithmetic",
    "conversion",
    "counting",
    "acronym",
    "caesar",
    *FACT_TASKS,
)


def generate_demo(
    n: int = 3000, seed: int = 1234, tasks: tuple[str, ...] = (), held_out: bool = False
) -> list[dict]:
    """`n` demo rows, deterministic for the arguments.

    `tasks` = () draws from DEFAULT_TASKS; a name given twice is drawn twice as often. The first
    len(tasks) rows take each name once, in order. `held_out=True` asks the fact tasks only about
    facts the default (`held_out=False`) rows never use (sft/data/demo_facts.py).
    """
    unknown = sorted(set(tasks) - set(TASKS))
    if unknown:
        raise ValueError(f"unknown demo task(s) {unknown}; choose from {sorted(TASKS)}")
    r = random.Random(seed)
    names = list(tasks or DEFAULT_TASKS)
    rows = []
    for i in range(n):
        task = names[i % len(names)] if i < len(names) else r.choice(names)
        prompt, answer = FACT_TASKS[task](r, held_out) if task in FACT_TASKS else TASKS[task](r)
        rows.append(
            {
                "id": f"demo-{i}",
                "task": task,
                "answer": answer,
                "messages": [
                    {"role": "user", "content": prompt},
                    {"role": "assistant", "content": answer},
                ],
            }
        )
    return rows


def normalize_answer(text: str) -> str:
    """Canonical form for exact match: stripped, internal whitespace runs collapsed per line."""
    lines = [" ".join(line.split()) for line in text.strip().splitlines()]
    return "\n".join(line for line in lines if line)
