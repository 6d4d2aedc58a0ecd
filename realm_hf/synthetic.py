"""A synthetic knowledge corpus generated in code: the embedded default of the demo and of the tests.

Invented people are born in invented cities of invented countries, in given years, and work in given occupations.
Every fact is written into two documents (the person's and the city's), so a sentence of one document whose fact is
masked can only be completed by retrieving the other one when the sentence's own document is excluded, as in REALM
pre-training. Questions about the facts serve open-domain QA.
"""

import random
from dataclasses import dataclass

import datasets


SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
_ONSETS = ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "gr", "kr", "st", "tr"]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ou", "ei"]
_CODAS = ["", "n", "r", "s", "l", "th", "m", "x"]
OCCUPATIONS = [
    "painter", "sailor", "chemist", "poet", "architect", "astronomer", "composer", "botanist",
    "engineer", "historian", "physician", "sculptor", "mathematician", "cartographer", "weaver", "geologist",
]  # fmt: skip


@dataclass
class SyntheticKnowledge:
    """The generated corpus.

    Attributes:
        documents (`datasets.Dataset`): `doc_id`, `title`, `text` of every document.
        questions (`datasets.Dataset`): `question`, `answers` (list of str), `gold_doc_ids` (documents stating the
            fact) and `relation`.
        facts (`datasets.Dataset`): one row per (sentence, salient span): `doc_id` of the sentence, `sentence`,
            `answer` (the salient span of the sentence) and `evidence_doc_id` (the other document stating it).
    """

    documents: datasets.Dataset
    questions: datasets.Dataset
    facts: datasets.Dataset

    def vocabulary(self) -> list[str]:
        """WordPiece vocabulary covering every word of the corpus and questions (special tokens first)."""
        words = set()
        for text in [*self.documents["title"], *self.documents["text"], *self.questions["question"]]:
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
    while True:
        name = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS) for _ in range(syllables))
        if name not in used and len(name) > 3:
            used.add(name)
            return name.capitalize()


def make_synthetic_knowledge(
    num_people: int = 120, num_cities: int = 30, num_countries: int = 8, seed: int = 0
) -> SyntheticKnowledge:
    """Generates a synthetic encyclopedic corpus.

    Args:
        num_people (`int`): Number of invented people (one document each).
        num_cities (`int`): Number of invented cities (one document each).
        num_countries (`int`): Number of invented countries.
        seed (`int`): Random seed; the same seed gives the same corpus.

    Returns:
        [`SyntheticKnowledge`].
    """
    if min(num_people, num_cities, num_countries) < 1:
        raise ValueError("num_people, num_cities and num_countries must all be >= 1.")
    rng = random.Random(seed)
    used: set[str] = set()
    countries = [_name(rng, used, 2) for _ in range(num_countries)]
    cities = [_name(rng, used, 2) for _ in range(num_cities)]
    city_country = {city: rng.choice(countries) for city in cities}
    people = []
    for _ in range(num_people):
        people.append(
            {
                "name": f"{_name(rng, used, 2)} {_name(rng, used, 2)}",
                "city": rng.choice(cities),
                "year": str(rng.randint(1700, 1950)),
                "occupation": rng.choice(OCCUPATIONS),
            }
        )

    documents, questions, facts = [], [], []
    city_doc = {city: num_people + i for i, city in enumerate(cities)}
    for doc_id, person in enumerate(people):
        name, city, year, job = person["name"], person["city"], person["year"], person["occupation"]
        born = f"{name} was born in {city} in {year}."
        worked = f"{name} worked as a {job}."
        documents.append({"doc_id": doc_id, "title": name, "text": f"{born} {worked}"})
        evidence = city_doc[city]
        facts.append({"doc_id": doc_id, "sentence": born, "answer": city, "evidence_doc_id": evidence})
        facts.append({"doc_id": doc_id, "sentence": born, "answer": year, "evidence_doc_id": evidence})
        facts.append({"doc_id": doc_id, "sentence": worked, "answer": job, "evidence_doc_id": evidence})
        questions.append(
            {"question": f"Where was {name} born?", "answers": [city], "gold_doc_ids": [doc_id, evidence],
             "relation": "birthplace"}
        )  # fmt: skip
        questions.append(
            {"question": f"In what year was {name} born?", "answers": [year], "gold_doc_ids": [doc_id, evidence],
             "relation": "birth_year"}
        )  # fmt: skip
        questions.append(
            {"question": f"What did {name} work as?", "answers": [job], "gold_doc_ids": [doc_id, evidence],
             "relation": "occupation"}
        )  # fmt: skip
    for city in cities:
        residents = [(i, p) for i, p in enumerate(people) if p["city"] == city]
        sentences = [f"{city} is a city in {city_country[city]}."]
        for person_id, person in residents:
            sentence = f"The {person['occupation']} {person['name']} was born in {city} in {person['year']}."
            sentences.append(sentence)
            facts.append(
                {
                    "doc_id": city_doc[city],
                    "sentence": sentence,
                    "answer": person["name"],
                    "evidence_doc_id": person_id,
                }
            )
        documents.append({"doc_id": city_doc[city], "title": city, "text": " ".join(sentences)})
    return SyntheticKnowledge(
        documents=datasets.Dataset.from_list(documents),
        questions=datasets.Dataset.from_list(questions),
        facts=datasets.Dataset.from_list(facts),
    )
