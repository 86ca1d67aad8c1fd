"""A deterministic, varied English corpus that the project makes itself (nothing downloaded).

Fidelity tests (INT8 vs FP32, a graph vs its reference) and the benchmark need many texts of
realistic lengths and topics, with no network and identical output on every machine. Texts
are readable sentences built from per-topic word lists and sentence templates, drawn with
`random.Random(seed)`. Lengths follow a typical embedding workload: 50% short (5-20 words,
queries and titles), 35% medium (21-80 words, paragraphs), 15% long (81-250 words, passages
that reach the 256-token limit). `SPECIAL_TEXTS` adds fixed texts that stress the tokenizer.
"""

from __future__ import annotations

import random

from embedder.tools.corpus_words import LINKS, OPINIONS, TIMES, TOPICS, Topic

SHORT = (5, 20)
MEDIUM = (21, 80)
LONG = (81, 250)
MIX = ((SHORT, 0.50), (MEDIUM, 0.35), (LONG, 0.15))

SPECIAL_TEXTS: tuple[str, ...] = (
    "東京は日本の首都で、世界でも有数の大都市です。",
    "北京是中国的首都，有着三千多年的建城历史。",
    "한국어 문장도 올바르게 처리되어야 합니다.",
    "Great job, team! 🎉🚀👍 Let's ship it today 💯🔥",
    "مرحبا بالعالم، هذا نص قصير باللغة العربية للاختبار.",
    "שלום עולם, זהו משפט קצר בעברית לבדיקה.",
    "Cafe\u0301 nai\u0308ve re\u0301sume\u0301 "
    "Z\u0334a\u0337l\u0336g\u0335o\u0338 a\u0308\u0301\u0302",
    'def add(a: int, b: int) -> int:\n    """Add two numbers."""\n    return a + b  # sum',
    "SELECT id, name FROM users WHERE created_at > '2024-01-01' ORDER BY id DESC LIMIT 10;",
    "3.14159 2.71828 1,000,000 -42 0x1F 1e-9 2024-05-17T12:30:45Z +1 (555) 010-9999",
    "Contact admin@example.com or open https://example.org/docs?q=embeddings&lang=en#top",
    "The price is €1.299,00 (≈ $1,400) — that's 20% off… «limited» offer!",
    "a",
    "The quick brown fox jumps over the lazy dog. " * 60,
)


def _third_person(verb: str) -> str:
    """'watch' -> 'watches', 'study' -> 'studies', 'plan' -> 'plans' (regular verbs only)."""
    if verb.endswith(("s", "sh", "ch", "x", "z", "o")):
        return verb + "es"
    if verb.endswith("y") and verb[-2] not in "aeiou":
        return verb[:-1] + "ies"
    return verb + "s"


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _sentence(rng: random.Random, t: Topic) -> str:
    """One readable sentence about topic `t`, from one of a dozen templates."""
    s, s2 = rng.sample(t.subjects, 2)
    v = rng.choice(t.verbs)
    o, o2 = rng.sample(t.objects, 2)
    a, p, r = rng.choice(t.adjectives), rng.choice(t.places), rng.choice(t.reasons)
    vs = _third_person(v)
    n = rng.choice((2, 3, 5, 7, 10, 12, 15, 20, 30, 45, 90, 100))
    templates = (
        f"{_cap(s)} {vs} {o} {p}.",
        f"{rng.choice(TIMES)}, {s} {vs} {o} {p}.",
        f"{_cap(s)} and {s2} {v} {o} together.",
        f"Why does {s} {v} {o} {p}?",
        f"{_cap(s)} said that {s2} {vs} {o} because {r}.",
        f"If {s} {vs} {o}, {s2} will {rng.choice(t.verbs)} {o2}.",
        f"{rng.choice(LINKS)}, {o} was {a} and {rng.choice(t.adjectives)}.",
        f"To {v} {o} {p} is {rng.choice(OPINIONS)}.",
        f"It took {n} minutes to {v} {o}, since {r}.",
        f"{_cap(s)} never {vs} {o} unless {r}.",
        f"Nobody expected {o} to be so {a}.",
        f"{_cap(s)} wrote {n} pages about {o} and {o2}.",
        f"According to {s}, {o} looks {a} {p}.",
        f"{_cap(s)} asked {s2} whether it is {rng.choice(OPINIONS)} to {v} {o}.",
        f"After {n} days, {s} finally managed to {v} {o}.",
        f"There is nothing {a} about {o}, {s} insisted.",
        f"{_cap(s)} prefers to {v} {o2} rather than {o}.",
        f"Should we {v} {o} now, or wait until {rng.choice(TIMES).lower()}?",
        f"Honestly, {o} was the most {a} part of the day.",
        f"{_cap(s)} keeps a notebook about {o}, because {r}.",
    )
    return rng.choice(templates)


def _short_text(rng: random.Random, t: Topic) -> str:
    """A query, a title or one or two sentences: what users send most often."""
    v, o, a = rng.choice(t.verbs), rng.choice(t.objects), rng.choice(t.adjectives)
    kind = rng.random()
    if kind < 0.2:
        return f"how to {v} {o} {rng.choice(t.places)}"
    if kind < 0.3:
        return f"What is the best way to {v} {o.removeprefix('the ')}?"
    if kind < 0.4:
        return f"{_cap(a)} {o.removeprefix('the ').removeprefix('a ')}: {rng.choice(t.reasons)}"
    text = _sentence(rng, t)
    while len(text.split()) < SHORT[0]:
        text += " " + _sentence(rng, t)
    return text


def _text(rng: random.Random, bounds: tuple[int, int]) -> str:
    lo, hi = bounds
    topic = TOPICS[rng.choice(sorted(TOPICS))]
    if bounds == SHORT:
        for _ in range(100):
            text = _short_text(rng, topic)
            if lo <= len(text.split()) <= hi:
                return text
    target = rng.randint(lo, hi)
    words: list[str] = []
    second = TOPICS[rng.choice(sorted(TOPICS))] if bounds == LONG else topic
    misses = 0
    while len(words) < target:
        # long passages drift to a second topic halfway, as real documents do
        sentence = _sentence(rng, topic if len(words) < target // 2 else second).split()
        if len(words) + len(sentence) > hi:
            misses += 1
            if misses > 50:
                break
            continue
        words.extend(sentence)
    if len(words) < lo:  # only if no sentence fitted: cut one to length
        words.extend(_sentence(rng, topic).split())
        words = words[:hi]
    return " ".join(words)


def corpus(n: int, seed: int = 0) -> list[str]:
    """`n` texts in a fixed 50/35/15 short/medium/long mix, identical for the same seed."""
    rng = random.Random(seed)
    counts = [round(n * share) for _, share in MIX]
    counts[0] += n - sum(counts)
    buckets = [bounds for (bounds, _), count in zip(MIX, counts, strict=True) for _ in range(count)]
    rng.shuffle(buckets)
    return [_text(rng, bounds) for bounds in buckets]
