"""The synthetic knowledge corpus of the demo: every masked fact is stated, in other words, by another document."""

import pytest

from realm_hf.demo.synthetic import make_synthetic_knowledge


def test_every_fact_is_stated_by_its_evidence_document_in_other_words():
    knowledge = make_synthetic_knowledge(num_people=30, num_cities=6, num_countries=2, seed=5)
    documents = {row["doc_id"]: row for row in knowledge.documents}
    assert len(documents) == 2 * 30 + 6
    for fact in knowledge.facts:
        own, evidence = documents[fact["doc_id"]], documents[fact["evidence_doc_id"]]
        assert fact["doc_id"] != fact["evidence_doc_id"]
        assert fact["sentence"] in own["text"] and fact["answer"] in fact["sentence"]
        assert fact["answer"] in evidence["text"]
        assert evidence["title"] == own["title"] and own["title"] in fact["sentence"]
        assert fact["sentence"] not in evidence["text"]  # the evidence words it differently


def test_same_seed_same_corpus_and_vocabulary_covers_it():
    first, second = make_synthetic_knowledge(num_people=5, seed=1), make_synthetic_knowledge(num_people=5, seed=1)
    assert first.documents.to_list() == second.documents.to_list()
    assert first.facts.to_list() == second.facts.to_list()
    assert make_synthetic_knowledge(num_people=5, seed=2).documents.to_list() != first.documents.to_list()
    vocabulary = set(first.vocabulary())
    assert {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"} <= vocabulary
    for question in first.questions:
        assert question["answers"][0].lower() in vocabulary


def test_bad_sizes():
    with pytest.raises(ValueError, match=">= 1"):
        make_synthetic_knowledge(num_people=0)


def test_worlds_of_one_entity_seed_share_names_but_not_facts():
    target = make_synthetic_knowledge(num_people=20, num_cities=5, seed=0)
    first, second = (
        make_synthetic_knowledge(
            num_people=60, num_cities=8, seed=s, entity_seed=7, name_pool_size=10, exclude_words=target.vocabulary()
        )
        for s in (1, 2)
    )
    assert first.entity_names == second.entity_names
    assert set(first.vocabulary()) == set(second.vocabulary())  # the pools, used or not
    assert first.facts.to_list() != second.facts.to_list()
    names = {doc["title"] for doc in first.documents.select(range(120))}
    assert len(names) == 60  # distinct combinations of pooled first and last names
    invented = {word.lower() for name in first.entity_names for word in name.split()}
    assert not invented & set(target.vocabulary())
    with pytest.raises(ValueError, match="distinct names"):
        make_synthetic_knowledge(num_people=30, name_pool_size=5)


def test_a_world_set_in_the_places_of_another_states_none_of_its_facts():
    target = make_synthetic_knowledge(num_people=20, num_cities=5, num_countries=2, seed=0)
    assert len(target.geography) == 5 and set(target.geography.values()) <= set(target.entity_names)
    other = make_synthetic_knowledge(
        num_people=40, seed=1, entity_seed=7, name_pool_size=10, exclude_words=target.vocabulary(),
        geography=target.geography,
    )  # fmt: skip
    assert other.geography == target.geography
    assert {d["title"] for d in other.documents.select(range(80, 85))} == set(target.geography)
    assert {fact["answer"] for fact in other.facts} - {str(y) for y in range(1700, 1951)} <= set(target.geography)
    people = {doc["title"] for doc in other.documents.select(range(80))}
    target_words = set(target.vocabulary())
    assert not {word.lower() for name in people for word in name.split()} & target_words
    target_sentences = {fact["sentence"] for fact in target.facts}
    assert not target_sentences & {fact["sentence"] for fact in other.facts}
    with pytest.raises(ValueError, match="geography"):
        make_synthetic_knowledge(num_people=3, geography={})
