"""The built-in world: a seeded generator of text in four capability domains.

No weights or datasets can be downloaded where calmix is developed, so the default study trains its
own small model on a world calmix writes itself. Each domain has a regularity the model must learn
and a held-out evaluation task that tests it:

- general: encyclopedic facts about invented cities; a city's country is given away by its name's
  suffix, so held-out cities can be placed (multiple choice);
- commonsense: what happens to dropped objects and how people feel after everyday events (multiple
  choice);
- code: small Python functions whose body follows from their name (generation, exact match);
- math: word problems with worked solutions (generation, exact match on the final number).

Two further held-out tasks are written only when a study's config names them: world_code_exec (the
same function heads, scored by running the completed function on test inputs; needs
evaluation.allow_code_execution) and world_perplexity (held-out pretraining-like documents for
rolling log-likelihood).

Calibration sources are further generators over the same world with a distinct character (web-like
mixture, encyclopedia, stories, QA, code, code instructions, equations, worked math, chat,
commonsense statements) plus two controls (random tokens, repetitive text). Everything is a pure
function of the seeds: same seeds, same text.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

DIMENSION_TASKS = {
    "general": "world_general",
    "commonsense": "world_commonsense",
    "code": "world_code",
    "math": "world_math",
}
#: Every held-out task the world writes: one per dimension, plus the optional ones.
WORLD_TASKS = (*DIMENSION_TASKS.values(), "world_code_exec", "world_perplexity")

_ONSETS = ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "gl", "kr", "st", "th"]
_VOWELS = ["a", "e", "i", "o", "u", "ae", "ou"]
_COUNTRIES = [
    # name, city suffix, language, climate, export
    ("Drask", "ford", "Draskish", "cold", "iron"),
    ("Olvena", "ixa", "Olvenic", "warm", "olives"),
    ("Tormund", "stad", "Tormish", "rainy", "wool"),
    ("Quessa", "polu", "Quessan", "dry", "salt"),
]
_RIVERS = ["Olun", "Varre", "Istel", "Maro", "Quend", "Sallow", "Tiber", "Yenn"]
_PRODUCTS = ["bridges", "markets", "libraries", "towers", "gardens", "festivals", "harbors", "mills"]
_DROP_OUTCOMES = {
    "broke": ["glass vase", "mirror", "teacup", "light bulb", "window pane", "porcelain plate", "wine glass", "egg"],
    "bounced": ["rubber ball", "tennis ball", "basketball", "bouncy toy", "rubber boot", "balloon", "football", "sponge ball"],
    "splashed": ["bucket of water", "glass of milk", "bowl of soup", "cup of tea", "jug of juice", "pot of water", "can of paint", "mug of coffee"],
    "rolled away": ["marble", "coin", "orange", "pencil", "wheel", "bead", "apple", "bottle cap"],
}
_FEELINGS = {
    "happy": ["got a present", "won the race", "passed the exam", "met an old friend", "found a lost dog", "got a new puppy", "heard good news", "finished the puzzle"],
    "sad": ["lost a favorite toy", "missed the bus home", "broke a favorite cup", "said goodbye to a friend", "failed the test", "had to stay inside", "lost the game", "dropped the ice cream"],
    "angry": ["was pushed in line", "was called a liar", "had the bike stolen", "was blamed unfairly", "was kept waiting for hours", "had the homework torn", "was cheated in the game", "was yelled at"],
    "scared": ["heard a noise at night", "saw a big snake", "was lost in the woods", "saw lightning strike", "heard a wolf howl", "fell into deep water", "saw a shadow move", "was alone in the dark"],
}
_PEOPLE = ["Tom", "Mia", "Sam", "Ana", "Leo", "Ivy", "Ben", "Zoe", "Max", "Eva", "Raj", "Kim", "Omar", "Lily", "Noah", "Sara"]
_HELD_OUT_PEOPLE = ["Aria", "Finn", "Nora", "Hugo", "Luca", "Maya", "Jade", "Otto"]
_ITEMS = ["apple", "book", "coin", "pencil", "stamp", "marble", "card", "shell", "cookie", "flower"]
_OPS = {"add": "+", "sub": "-", "mul": "*"}
_OP_WORDS = {"add": "adds {k} to", "sub": "subtracts {k} from", "mul": "multiplies {k} with"}
_PARAMS = ["x", "n", "a", "value", "num", "y"]
_PRETRAIN_FORMATS = ["web", "encyclopedia", "stories", "qa", "chat", "code_instruct", "equations", "commonsense"]
_NOISE = [
    "Click here to subscribe to our newsletter.", "All rights reserved.", "Posted on {d} by admin.",
    "Share this page with your friends.", "Read more about this topic below.", "Last updated {d}.",
    "Home | About | Contact", "Sign in to leave a comment.",
]


def _name(rng: random.Random, syllables: int) -> str:
    return "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(syllables)).capitalize()


@dataclass(frozen=True)
class City:
    name: str
    country: str
    river: str
    product: str


class World:
    """All entities of the world and the generators of its text, built from one seed."""

    def __init__(self, seed: int = 0, cities_per_country: int = 30, held_out_per_country: int = 30) -> None:
        self.seed = seed
        rng = random.Random(f"world-{seed}")
        stems: list[str] = []
        seen: set[str] = set()
        need = len(_COUNTRIES) * (cities_per_country + held_out_per_country)
        while len(stems) < need:
            stem = _name(rng, rng.choice([1, 2, 2]))
            if stem not in seen:
                seen.add(stem)
                stems.append(stem)
        self.cities: list[City] = []
        self.held_out_cities: list[City] = []
        for i, (country, suffix, *_rest) in enumerate(_COUNTRIES):
            block = stems[i * (cities_per_country + held_out_per_country):(i + 1) * (cities_per_country + held_out_per_country)]
            for j, stem in enumerate(block):
                city = City(stem + suffix, country, rng.choice(_RIVERS), rng.choice(_PRODUCTS))
                (self.cities if j < cities_per_country else self.held_out_cities).append(city)
        self.countries = {c[0]: {"suffix": c[1], "language": c[2], "climate": c[3], "export": c[4]} for c in _COUNTRIES}

    # --- sentences per domain -------------------------------------------------------------------

    def general_fact(self, rng: random.Random) -> str:
        city = rng.choice(self.cities)
        info = self.countries[city.country]
        return rng.choice([
            f"{city.name} is a city in {city.country}.",
            f"{city.name} is a city in {city.country}. It lies on the {city.river} river.",
            f"{city.name} is a city in {city.country}, known for its {city.product}.",
            f"The people of {city.country} speak {info['language']}.",
            f"{city.country} has a {info['climate']} climate and exports {info['export']}.",
            f"{city.name} is a city in {city.country}. Its people speak {info['language']}.",
        ])

    def drop_event(self, rng: random.Random, people: list[str] = _PEOPLE) -> tuple[str, str, list[str]]:
        outcome = rng.choice(sorted(_DROP_OUTCOMES))
        obj = rng.choice(_DROP_OUTCOMES[outcome])
        return f"When {rng.choice(people)} dropped the {obj}, it", outcome, sorted(_DROP_OUTCOMES)

    def feeling_event(self, rng: random.Random, people: list[str] = _PEOPLE) -> tuple[str, str, list[str]]:
        feeling = rng.choice(sorted(_FEELINGS))
        return f"{rng.choice(people)} {rng.choice(_FEELINGS[feeling])}, so they felt", feeling, sorted(_FEELINGS)

    def commonsense_fact(self, rng: random.Random) -> str:
        query, answer, _ = (self.drop_event if rng.random() < 0.5 else self.feeling_event)(rng)
        return f"{query} {answer}."

    def commonsense_statement(self, rng: random.Random) -> str:
        if rng.random() < 0.5:
            outcome = rng.choice(sorted(_DROP_OUTCOMES))
            obj = rng.choice(_DROP_OUTCOMES[outcome])
            present = {"broke": "breaks", "bounced": "bounces", "splashed": "splashes", "rolled away": "rolls away"}
            return f"If you drop a {obj}, it {present[outcome]}."
        feeling = rng.choice(sorted(_FEELINGS))
        return f"Someone who {rng.choice(_FEELINGS[feeling])} feels {feeling}."

    def _function_parts(self, rng: random.Random) -> tuple[str, int, str]:
        """(operation, constant, parameter name) of one small function."""
        op = rng.choice(sorted(_OPS))
        k = rng.randint(1, 20)
        return op, k, rng.choice(_PARAMS)

    def function(self, rng: random.Random) -> tuple[str, str]:
        op, k, p = self._function_parts(rng)
        return f"def {op}_{k}({p}):\n    return", f"{p} {_OPS[op]} {k}"

    def checked_function(self, rng: random.Random, n_tests: int = 3) -> dict:
        """A function head to complete, its canonical body and asserts that check any body by running it."""
        op, k, p = self._function_parts(rng)
        apply = {"add": lambda v: v + k, "sub": lambda v: v - k, "mul": lambda v: v * k}[op]
        inputs = rng.sample(range(-9, 31), n_tests)
        return {
            "prompt": f"def {op}_{k}({p}):\n    return",
            "answer": f"{p} {_OPS[op]} {k}",
            "entry_point": f"{op}_{k}",
            "tests": [f"assert {op}_{k}({v}) == {apply(v)}" for v in inputs],
        }

    def code_snippet(self, rng: random.Random) -> str:
        roll = rng.random()
        if roll < 0.7:
            head, body = self.function(rng)
            return f"{head} {body}\n"
        if roll < 0.85:
            op = rng.choice(sorted(_OPS))
            k, arg = rng.randint(1, 20), rng.randint(1, 9)
            value = {"add": arg + k, "sub": arg - k, "mul": arg * k}[op]
            return f"print({op}_{k}({arg}))  # {value}\n"
        p = rng.choice(["xs", "items", "values"])
        return f"def total({p}):\n    s = 0\n    for v in {p}:\n        s = s + v\n    return s\n"

    def word_problem(self, rng: random.Random, people: list[str] = _PEOPLE) -> tuple[str, str, str]:
        """(question ending in 'Answer:', worked answer, final number)."""
        person, item = rng.choice(people), rng.choice(_ITEMS)
        a, b = rng.randint(1, 12), rng.randint(1, 12)
        if rng.random() < 0.5:
            q = f"Question: {person} has {a} {item}s and gets {b} more. How many now?"
            work, c = f"{a} + {b} = {a + b}", a + b
        else:
            a, b = max(a, b), min(a, b)
            q = f"Question: {person} has {a} {item}s and gives {b} away. How many now?"
            work, c = f"{a} - {b} = {a - b}", a - b
        return q + "\nAnswer:", f" {work}. The answer is {c}.", str(c)

    def equation(self, rng: random.Random) -> str:
        a, b = rng.randint(1, 12), rng.randint(1, 12)
        if rng.random() < 0.5:
            return f"{a} + {b} = {a + b}"
        a, b = max(a, b), min(a, b)
        return f"{a} - {b} = {a - b}"

    # --- evaluation items -------------------------------------------------------------------------

    def eval_items(self, task: str, n: int, seed: int) -> list[dict]:
        """Held-out items for one task: unseen cities, unseen names, fresh problems, fresh documents.

        Each task draws from its own random stream ("eval-<world seed>-<task>-<seed>"), distinct from
        the streams of every corpus ("docs-..."), so adding a task changes no other task's items.
        """
        rng = random.Random(f"eval-{self.seed}-{task}-{seed}")
        if task == "world_perplexity":
            # Pretraining-like documents (the training corpus and calibration sources draw theirs
            # from the "docs-..." streams), without the trailing newline.
            return [{"text": doc.rstrip("\n")} for doc in self._documents(self._pretrain, n, rng)]
        items = []
        for _ in range(n):
            if task == "world_general":
                city = rng.choice(self.held_out_cities)
                choices = sorted(self.countries)
                items.append({"query": f"{city.name} is a city in", "choices": choices, "label": choices.index(city.country)})
            elif task == "world_commonsense":
                make = self.drop_event if rng.random() < 0.5 else self.feeling_event
                query, answer, choices = make(rng, _HELD_OUT_PEOPLE)
                items.append({"query": query, "choices": choices, "label": choices.index(answer)})
            elif task == "world_code":
                prompt, answer = self.function(rng)
                items.append({"prompt": prompt, "answer": answer})
            elif task == "world_math":
                prompt, _, answer = self.word_problem(rng, _HELD_OUT_PEOPLE)
                items.append({"prompt": prompt, "answer": answer})
            elif task == "world_code_exec":
                items.append(self.checked_function(rng))
            else:
                raise ValueError(f"unknown world task {task!r}; known: {sorted(WORLD_TASKS)}")
        return items

    # --- documents ---------------------------------------------------------------------------------

    def _domain_text(self, domain: str, rng: random.Random) -> str:
        if domain == "general":
            return self.general_fact(rng)
        if domain == "commonsense":
            return self.commonsense_fact(rng) if rng.random() < 0.7 else self.commonsense_statement(rng)
        if domain == "code":
            return self.code_snippet(rng)
        q, a, _ = self.word_problem(rng)
        return q + a

    def _pretrain(self, rng: random.Random) -> str:
        # Mostly the four domains in their evaluated form; math gets the largest share because
        # copying operands over a sentence is the hardest skill here. A fifth is the other sources'
        # formats (chat, QA, instructions, ...), as a real pretraining mix holds them too.
        if rng.random() < 0.2:
            return self.generators()[rng.choice(_PRETRAIN_FORMATS)](rng)
        return self._domain_text(rng.choices(["general", "commonsense", "code", "math"], [0.25, 0.2, 0.2, 0.35])[0], rng)

    def _web(self, rng: random.Random) -> str:
        roll = rng.random()
        if roll < 0.45:
            return self.general_fact(rng)
        if roll < 0.8:
            return self.commonsense_fact(rng)
        if roll < 0.9:
            q, a, _ = self.word_problem(rng)
            return q + a
        return rng.choice(_NOISE).format(d=f"{rng.randint(1, 28)}/{rng.randint(1, 12)}/20{rng.randint(10, 25)}")

    def _encyclopedia(self, rng: random.Random) -> str:
        return self.general_fact(rng)

    def _stories(self, rng: random.Random) -> str:
        person = rng.choice(_PEOPLE)
        query, answer, _ = (self.drop_event if rng.random() < 0.5 else self.feeling_event)(rng, [person])
        opener = rng.choice(["One day,", "Last week,", "In the morning,", "After school,"])
        query = query.replace("When", "when", 1)
        return f"{opener} {query} {answer}. {person} went home."

    def _qa(self, rng: random.Random) -> str:
        if rng.random() < 0.5:
            city = rng.choice(self.cities)
            return f"Q: Which country is {city.name} in?\nA: {city.name} is a city in {city.country}."
        query, answer, _ = (self.drop_event if rng.random() < 0.5 else self.feeling_event)(rng)
        return f"Q: What happened next?\nA: {query} {answer}."

    def _code(self, rng: random.Random) -> str:
        return self.code_snippet(rng)

    def _code_instruct(self, rng: random.Random) -> str:
        op = rng.choice(sorted(_OPS))
        k = rng.randint(1, 20)
        p = rng.choice(_PARAMS)
        task = _OP_WORDS[op].format(k=k)
        return f"### Instruction: Write a function that {task} {p}.\n### Response:\ndef {op}_{k}({p}):\n    return {p} {_OPS[op]} {k}\n"

    def _equations(self, rng: random.Random) -> str:
        return self.equation(rng)

    def _worked_math(self, rng: random.Random) -> str:
        q, a, _ = self.word_problem(rng)
        return q + a

    def _chat(self, rng: random.Random) -> str:
        domain = rng.choice(["general", "commonsense", "code", "math"])
        if domain == "general":
            city = rng.choice(self.cities)
            ask, reply = f"Where is {city.name}?", f"{city.name} is a city in {city.country}."
        elif domain == "commonsense":
            query, answer, _ = self.drop_event(rng)
            ask, reply = "What happens if you drop something fragile?", f"{query} {answer}."
        elif domain == "code":
            head, body = self.function(rng)
            ask, reply = "Can you write a small function?", f"Sure:\n{head} {body}"
        else:
            q, a, _ = self.word_problem(rng)
            ask, reply = q.removeprefix("Question: ").removesuffix("\nAnswer:"), a.strip()
        return f"User: {ask}\nAssistant: {reply}"

    def _commonsense(self, rng: random.Random) -> str:
        return self.commonsense_statement(rng)

    def _random_tokens(self, rng: random.Random) -> str:
        return " ".join(rng.choice(self.lexicon) for _ in range(rng.randint(8, 16)))

    def _repetitive(self, rng: random.Random) -> str:
        return "The market opens at nine and closes at five."

    @cached_property
    def lexicon(self) -> list[str]:
        """Every word, number and code symbol of the world: what the random-tokens control draws from."""
        words = {w for c in self.cities for w in (c.name, c.country, c.river, c.product)}
        words |= {w for objs in _DROP_OUTCOMES.values() for o in objs for w in o.split()}
        words |= set(_PEOPLE) | set(_ITEMS) | set(_PARAMS) | set(_FEELINGS) | {str(i) for i in range(30)}
        words |= {"def", "return", "print", "(", ")", ":", "+", "-", "*", "=", ".", ",", "the", "is", "a", "in"}
        return sorted(words)

    def generators(self) -> dict[str, Callable[[random.Random], str]]:
        return {
            "pretrain": self._pretrain, "web": self._web, "encyclopedia": self._encyclopedia,
            "stories": self._stories, "qa": self._qa, "code": self._code, "code_instruct": self._code_instruct,
            "equations": self._equations, "worked_math": self._worked_math, "chat": self._chat,
            "commonsense": self._commonsense, "random_tokens": self._random_tokens, "repetitive": self._repetitive,
        }

    def documents(self, generator: str, n_docs: int, seed: int, pieces: tuple[int, int] = (4, 12)) -> list[str]:
        """n_docs documents of a few pieces each; the seed is mixed with the generator's name."""
        make = self.generators().get(generator)
        if make is None:
            raise ValueError(f"unknown world generator {generator!r}; known: {sorted(self.generators())}")
        return self._documents(make, n_docs, random.Random(f"docs-{self.seed}-{generator}-{seed}"), pieces)

    @staticmethod
    def _documents(
        make: Callable[[random.Random], str], n_docs: int, rng: random.Random, pieces: tuple[int, int] = (4, 12)
    ) -> list[str]:
        docs = []
        for _ in range(n_docs):
            parts = [make(rng) for _ in range(rng.randint(*pieces))]
            docs.append("\n".join(p.rstrip("\n") for p in parts) + "\n")
        return docs


WORLD_GENERATORS = tuple(World(0, 1, 1).generators())
