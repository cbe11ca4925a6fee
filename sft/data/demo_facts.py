"""Short-answer demo tasks built on facts a pretrained model already knows.

A base instruct model answers "What is the capital of Japan?" with a sentence ("The capital of
Japan is Tokyo."), so exact match scores it 0 although it knows the answer; supervised
fine-tuning teaches the requested form ("Tokyo"). `make demo` measures that gain on facts the
training never showed.

Invariant: every fact list is split by position, one item in four held out
(`index % 4 == 3`); `held_out=False` draws only from the other three, `held_out=True` only from
the held-out quarter, so evaluation prompts built with `held_out=True` ask about facts absent
from every training row.
"""

from __future__ import annotations

import random

CAPITALS = [
    ("France", "Paris"),
    ("Japan", "Tokyo"),
    ("Italy", "Rome"),
    ("Egypt", "Cairo"),
    ("Canada", "Ottawa"),
    ("Germany", "Berlin"),
    ("Spain", "Madrid"),
    ("Russia", "Moscow"),
    ("China", "Beijing"),
    ("the United Kingdom", "London"),
    ("Greece", "Athens"),
    ("Portugal", "Lisbon"),
    ("Ireland", "Dublin"),
    ("Norway", "Oslo"),
    ("Sweden", "Stockholm"),
    ("Finland", "Helsinki"),
    ("Denmark", "Copenhagen"),
    ("Poland", "Warsaw"),
    ("Austria", "Vienna"),
    ("Hungary", "Budapest"),
    ("the Czech Republic", "Prague"),
    ("the Netherlands", "Amsterdam"),
    ("Belgium", "Brussels"),
    ("Thailand", "Bangkok"),
    ("Vietnam", "Hanoi"),
    ("South Korea", "Seoul"),
    ("Indonesia", "Jakarta"),
    ("the Philippines", "Manila"),
    ("Kenya", "Nairobi"),
    ("Argentina", "Buenos Aires"),
    ("Peru", "Lima"),
    ("Chile", "Santiago"),
    ("Cuba", "Havana"),
    ("Iran", "Tehran"),
    ("Iraq", "Baghdad"),
    ("Saudi Arabia", "Riyadh"),
    ("Afghanistan", "Kabul"),
    ("Bangladesh", "Dhaka"),
    ("Australia", "Canberra"),
    ("New Zealand", "Wellington"),
    ("Romania", "Bucharest"),
    ("Bulgaria", "Sofia"),
    ("Serbia", "Belgrade"),
    ("Iceland", "Reykjavik"),
    ("Lebanon", "Beirut"),
    ("Syria", "Damascus"),
    ("Nepal", "Kathmandu"),
    ("Malaysia", "Kuala Lumpur"),
    ("Venezuela", "Caracas"),
    ("Uruguay", "Montevideo"),
    ("Ghana", "Accra"),
    ("Senegal", "Dakar"),
    ("Uganda", "Kampala"),
    ("Mexico", "Mexico City"),
    ("Ukraine", "Kyiv"),
    ("Pakistan", "Islamabad"),
]

PLURALS = [
    ("box", "boxes"),
    ("child", "children"),
    ("city", "cities"),
    ("mouse", "mice"),
    ("man", "men"),
    ("woman", "women"),
    ("tooth", "teeth"),
    ("foot", "feet"),
    ("goose", "geese"),
    ("knife", "knives"),
    ("leaf", "leaves"),
    ("wolf", "wolves"),
    ("baby", "babies"),
    ("story", "stories"),
    ("party", "parties"),
    ("church", "churches"),
    ("bus", "buses"),
    ("dish", "dishes"),
    ("glass", "glasses"),
    ("fox", "foxes"),
    ("watch", "watches"),
    ("potato", "potatoes"),
    ("tomato", "tomatoes"),
    ("hero", "heroes"),
    ("cat", "cats"),
    ("dog", "dogs"),
    ("book", "books"),
    ("car", "cars"),
    ("tree", "trees"),
    ("house", "houses"),
    ("apple", "apples"),
    ("river", "rivers"),
    ("table", "tables"),
    ("chair", "chairs"),
    ("bird", "birds"),
    ("horse", "horses"),
    ("flower", "flowers"),
    ("window", "windows"),
    ("pencil", "pencils"),
    ("sheep", "sheep"),
    ("half", "halves"),
    ("life", "lives"),
    ("wife", "wives"),
    ("shelf", "shelves"),
    ("day", "days"),
    ("key", "keys"),
    ("toy", "toys"),
    ("boy", "boys"),
    ("country", "countries"),
    ("lady", "ladies"),
    ("family", "families"),
    ("brush", "brushes"),
    ("class", "classes"),
    ("wish", "wishes"),
    ("ox", "oxen"),
    ("person", "people"),
]

OPPOSITES = [
    ("hot", "cold"),
    ("early", "late"),
    ("big", "small"),
    ("fast", "slow"),
    ("happy", "sad"),
    ("up", "down"),
    ("full", "empty"),
    ("rich", "poor"),
    ("strong", "weak"),
    ("wet", "dry"),
    ("thick", "thin"),
    ("loud", "quiet"),
    ("clean", "dirty"),
    ("true", "false"),
    ("win", "lose"),
    ("buy", "sell"),
    ("push", "pull"),
    ("love", "hate"),
    ("alive", "dead"),
    ("inside", "outside"),
    ("first", "last"),
    ("north", "south"),
    ("east", "west"),
    ("day", "night"),
    ("black", "white"),
    ("good", "bad"),
    ("high", "low"),
    ("deep", "shallow"),
    ("cheap", "expensive"),
    ("safe", "dangerous"),
    ("friend", "enemy"),
    ("question", "answer"),
    ("accept", "reject"),
    ("increase", "decrease"),
    ("remember", "forget"),
    ("above", "below"),
    ("before", "after"),
    ("always", "never"),
    ("maximum", "minimum"),
    ("positive", "negative"),
    ("ancient", "modern"),
    ("entrance", "exit"),
    ("arrive", "depart"),
    ("asleep", "awake"),
    ("correct", "incorrect"),
    ("possible", "impossible"),
    ("visible", "invisible"),
    ("success", "failure"),
    ("victory", "defeat"),
    ("wide", "narrow"),
    ("sharp", "dull"),
    ("smooth", "rough"),
]


def _split(facts: list[tuple[str, str]], held_out: bool) -> list[tuple[str, str]]:
    return [f for i, f in enumerate(facts) if (i % 4 == 3) == held_out]


def capital(r: random.Random, held_out: bool = False) -> tuple[str, str]:
    country, city = r.choice(_split(CAPITALS, held_out))
    return f"What is the capital of {country}? Reply with the city only.", city


def plural(r: random.Random, held_out: bool = False) -> tuple[str, str]:
    word, many = r.choice(_split(PLURALS, held_out))
    return f"What is the plural of '{word}'? Reply with the word only.", many


def opposite(r: random.Random, held_out: bool = False) -> tuple[str, str]:
    word, other = r.choice(_split(OPPOSITES, held_out))
    return f"What is the opposite of '{word}'? Reply with the word only.", other


FACT_TASKS = {"capital": capital, "plural": plural, "opposite": opposite}
