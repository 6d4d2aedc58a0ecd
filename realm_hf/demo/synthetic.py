"""A synthetic knowledge corpus generated in code: the embedded default of the demo and of the tests.

Invented people are born in invented cities of invented countries, in given years, and work in given occupations in
given cities.
Every person has two documents, both titled with the name, that state the same facts in different words (sentence
templates and order drawn at random per document), so a sentence of one whose fact is masked can only be completed by
retrieving the other when the sentence's own document is excluded, as in REALM pre-training; city documents are
distractors. Questions about the facts serve open-domain
QA.
"""

import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import datasets


SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
_ONSETS = ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "gr", "kr", "st", "tr"]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ou", "ei"]
_CODAS = ["", "n", "r", "s", "l", "th", "m", "x"]
OCCUPATIONS = [
    "painter", "sailor", "chemist", "poet", "architect", "astronomer", "composer", "botanist",
    "engineer", "historian", "physician", "sculptor", "mathematician", "cartographer", "weaver", "geologist",
]  # fmt: skip
YEARS = range(1700, 1951)
_BORN_TEMPLATES = [
    "{name} was born in {city} in {year}.",
    "In {year}, {name} was born in {city}.",
    "{name} was born in {year} in the city of {city}.",
    "The birthplace of {name} was {city}, and the year was {year}.",
]
_WORK_TEMPLATES = [
    "{name} worked in {work_city} as {a} {job}.",
    "{name} was {a} {job} in {work_city}.",
    "As {a} {job}, {name} worked in {work_city}.",
    "The work of {name} as {a} {job} took place in {work_city}.",
]


@dataclass
class SyntheticKnowledge:
    """The generated corpus.

    Attributes:
        documents (`datasets.Dataset`): `doc_id`, `title`, `text` of every document.
        questions (`datasets.Dataset`): `question`, `answers` (list of str), `gold_doc_ids` (documents stating the
            fact) and `relation`.
        facts (`datasets.Dataset`): one row per (sentence, salient span): `doc_id` of the sentence, `sentence`,
            `answer` (the salient span of the sentence) and `evidence_doc_id` (the other document stating it).
        entity_names (`tuple[str, ...]`): Every country, city and name part the generator could draw from (with
            `name_pool_size`, worlds of other seeds draw from the same pools).
        geography (`dict[str, str]`): The country of every city.
    """

    documents: datasets.Dataset
    questions: datasets.Dataset
    facts: datasets.Dataset
    entity_names: tuple[str, ...] = ()
    geography: dict[str, str] = field(default_factory=dict)

    def vocabulary(self) -> list[str]:
        """WordPiece vocabulary covering every word of the corpus and questions and every word the generator can use
        with this world's entities (names, occupations, years), special tokens first."""
        words = set()
        for text in [
            *self.documents["title"], *self.documents["text"], *self.questions["question"], *self.entity_names,
            *OCCUPATIONS, *map(str, YEARS),
        ]:  # fmt: skip
            words.update(_words(text))
        return SPECIAL_TOKENS + sorted(words)


def _words(text: str) -> list[str]:
    out, word = [], ""
    for char in text.lower():
        if char.isalnum():
            word += char
        else:
            if word:
                out.append(word)
                word = ""
            if not char.isspace():
                out.append(char)
    return out + ([word] if word else [])


def _name(rng: random.Random, used: set[str], syllables: int) -> str:
    """A new invented word; `used` holds the lower-cased words already taken."""
    while True:
        name = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS) for _ in range(syllables))
        if name not in used and len(name) > 3:
            used.add(name)
            return name.capitalize()


def make_synthetic_knowledge(
    num_people: int = 120,
    num_cities: int = 30,
    num_countries: int = 8,
    seed: int = 0,
    *,
    entity_seed: int | None = None,
    name_pool_size: int | None = None,
    exclude_words: Iterable[str] = (),
    geography: Mapping[str, str] | None = None,
) -> SyntheticKnowledge:
    """Generates a synthetic encyclopedic corpus.

    Args:
        num_people (`int`): Number of invented people (two documents each).
        num_cities (`int`): Number of invented cities (one short document each).
        num_countries (`int`): Number of invented countries.
        seed (`int`): Random seed; the same seed gives the same corpus.
        entity_seed (`int`, *optional*): Seed of the entity names (countries, cities, name pools) when they should
            not change with `seed`: worlds with the same `entity_seed` and other seeds state other facts about the
            same cities and names, so no fact can be memorised across them (the demo's reading warm start).
        name_pool_size (`int`, *optional*): Draw first and last names from two pools of this many names (people are
            distinct combinations), instead of inventing two new words per person.
        exclude_words (`Iterable[str]`): Words no invented name may be (for example another world's vocabulary).
        geography (`Mapping[str, str]`, *optional*): Use these cities (keys) and their countries (values) instead of
            inventing `num_cities` cities in `num_countries` countries: a world of other people in the places of
            another world (`SyntheticKnowledge.geography`), as the demo's reading warm start uses them.

    Returns:
        [`SyntheticKnowledge`].
    """
    if min(num_people, num_cities, num_countries) < 1:
        raise ValueError("num_people, num_cities and num_countries must all be >= 1.")
    if name_pool_size is not None and (name_pool_size < 1 or name_pool_size**2 < num_people):
        raise ValueError(f"name_pool_size={name_pool_size} gives fewer than num_people={num_people} distinct names.")
    rng = random.Random(seed)
    entity_rng = rng if entity_seed is None else random.Random(entity_seed)
    used: set[str] = {word.lower() for word in exclude_words}
    if geography is None:
        countries = [_name(entity_rng, used, 2) for _ in range(num_countries)]
        cities = [_name(entity_rng, used, 2) for _ in range(num_cities)]
        city_country = {city: entity_rng.choice(countries) for city in cities}
    elif not geography:
        raise ValueError("geography must name at least one city.")
    else:
        city_country = dict(geography)
        cities, countries = list(city_country), sorted(set(city_country.values()))
        used.update(word.lower() for word in (*cities, *countries))
    entity_names = [*countries, *cities]
    if name_pool_size is not None:
        first_names = [_name(entity_rng, used, 2) for _ in range(name_pool_size)]
        last_names = [_name(entity_rng, used, 2) for _ in range(name_pool_size)]
        entity_names += first_names + last_names
        combinations = rng.sample(range(name_pool_size**2), num_people)
        names = [f"{first_names[c // name_pool_size]} {last_names[c % name_pool_size]}" for c in combinations]
    people = []
    for person_id in range(num_people):
        if name_pool_size is None:
            name = f"{_name(rng, used, 2)} {_name(rng, used, 2)}"
            entity_names.append(name)
        else:
            name = names[person_id]
        people.append(
            {
                "name": name,
                "city": rng.choice(cities),
                "year": str(rng.choice(YEARS)),
                "occupation": rng.choice(OCCUPATIONS),
                "work_city": rng.choice(cities),
            }
        )

    documents, questions, facts = [], [], []
    for person_id, person in enumerate(people):
        name, city, year, work_city = person["name"], person["city"], person["year"], person["work_city"]
        job = person["occupation"]
        article = "an" if job[0] in "aeiou" else "a"
        values = {"name": name, "city": city, "year": year, "job": job, "a": article, "work_city": work_city}
        first, second = 2 * person_id, 2 * person_id + 1
        # The two documents word every fact differently and in a random order: nothing but the person's name and the
        # facts themselves links them, so a retriever has to match names, not sentence shapes.
        born_forms = rng.sample(range(len(_BORN_TEMPLATES)), 2)
        work_forms = rng.sample(range(len(_WORK_TEMPLATES)), 2)
        sentences = {}
        for doc_id, born_form, work_form in (
            (first, born_forms[0], work_forms[0]),
            (second, born_forms[1], work_forms[1]),
        ):
            born = _BORN_TEMPLATES[born_form].format(**values)
            worked = _WORK_TEMPLATES[work_form].format(**values)
            sentences[doc_id] = (born, worked)
            text = f"{born} {worked}" if rng.random() < 0.5 else f"{worked} {born}"
            documents.append({"doc_id": doc_id, "title": name, "text": text})
        for doc_id, evidence in ((first, second), (second, first)):
            born, worked = sentences[doc_id]
            for sentence, answer in ((born, city), (born, year), (worked, work_city)):
                facts.append({"doc_id": doc_id, "sentence": sentence, "answer": answer, "evidence_doc_id": evidence})
        for question, answer, relation in (
            (f"Where was {name} born?", city, "birthplace"),
            (f"In what year was {name} born?", year, "birth_year"),
            (f"Where did {name} work?", work_city, "work_place"),
        ):
            questions.append(
                {"question": question, "answers": [answer], "gold_doc_ids": [first, second], "relation": relation}
            )
    for i, city in enumerate(cities):
        documents.append(
            {"doc_id": 2 * num_people + i, "title": city, "text": f"{city} is a city in {city_country[city]}."}
        )
    return SyntheticKnowledge(
        documents=datasets.Dataset.from_list(documents),
        questions=datasets.Dataset.from_list(questions),
        facts=datasets.Dataset.from_list(facts),
        entity_names=tuple(entity_names),
        geography=city_country,
    )
