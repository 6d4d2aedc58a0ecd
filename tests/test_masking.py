"""Tests of `realm_hf.training.masking`: sentence splitting, salient span taggers and `tag_salient_spans`."""

import pickle
import sys
import types

import datasets
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from realm_hf.demo.job import build_tokenizer
from realm_hf.retrieval.corpus import split_sentences
from realm_hf.tokenization_realm import RealmTokenizerFast
from realm_hf.training.masking import char_spans_to_token_spans, salient_span_features, tag_salient_spans
from realm_hf.training.taggers import (
    RuleBasedTagger,
    SpacyTagger,
    TransformersNERTagger,
    make_tagger,
    resolve_overlaps,
)


VOCAB = (
    "[PAD] [UNK] [CLS] [SEP] [MASK] alan turing was born in london on 23 june 1912 . , ! ? paris is big i love "
    "the university of cambridge met march 12 1890 it cost 3 000 50 % he ada lovelace wrote a poem about ##s "
    "[ ] mask"
).split()


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory) -> RealmTokenizerFast:
    path = tmp_path_factory.mktemp("masking_tokenizer")
    tok = build_tokenizer(VOCAB, path)
    tok.model_max_length = 64
    return tok


def _spans_text(text, spans):
    return [(text[s:e], label) for s, e, label in spans]


# ----------------------------------------------------------------------------------------------------------------
# split_sentences
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("", []),
        ("   \n\t ", []),
        ("One sentence", ["One sentence"]),
        ("Hello world. How are you?  Fine!\nNext line", ["Hello world.", "How are you?", "Fine!", "Next line"]),
        ('He said "Stop." Then left.', ['He said "Stop."', "Then left."]),
        ("Wait... what?! Yes.", ["Wait...", "what?!", "Yes."]),
        ("Mr. Smith met J. R. R. Tolkien, e.g. on Monday. Dr. Who", ["Mr. Smith met J. R. R. Tolkien, e.g. on Monday.", "Dr. Who"]),
        ("version 3.5 is out. Ok", ["version 3.5 is out.", "Ok"]),
        ("第一句。第二句！", ["第一句。", "第二句！"]),
    ],
)  # fmt: skip
def test_split_sentences(text, expected):
    spans = split_sentences(text)
    assert [text[s:e] for s, e in spans] == expected


# ----------------------------------------------------------------------------------------------------------------
# RuleBasedTagger
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            "Alan Turing was born in London on 23 June 1912.",
            [("Alan Turing", "NAME"), ("London", "NAME"), ("23 June 1912", "DATE")],
        ),
        ("It was 12 March 1890, March 1890 or March 12, 1890.", [("12 March 1890", "DATE"), ("March 1890", "DATE"), ("March 12, 1890", "DATE")]),
        ("In 1890 and 2099 but not 999, 2100 or 1890s.", [("1890", "DATE"), ("2099", "DATE"), ("999", "NUMBER"), ("2100", "NUMBER")]),
        ("It cost 3,000.50 dollars or 12% more, not v2 or 2nd.", [("3,000.50", "NUMBER"), ("12%", "NUMBER")]),
        # A single capitalised word at the start of a sentence is not a name ...
        ("Paris is big.", []),
        # ... unless it also appears capitalised in the middle of a sentence of the same text,
        ("Paris is big. I love Paris.", [("Paris", "NAME"), ("Paris", "NAME")]),
        # ... or is followed by another capitalised word.
        ("Ada Lovelace wrote a poem.", [("Ada Lovelace", "NAME")]),
        # Leading function words are dropped, connectors join names, possessives are left out.
        ("The University of Cambridge met Turing's friend.", [("University of Cambridge", "NAME"), ("Turing", "NAME")]),
        ("In London he met Mr. J. R. R. Tolkien.", [("London", "NAME"), ("Mr. J. R. R. Tolkien", "NAME")]),
        # Names never cross a sentence boundary or a line break; a bare month is not a name.
        ("He met Ada. Lovelace came in May.", [("Ada", "NAME")]),
        ("I met Ada\nLovelace Byron", [("Ada", "NAME"), ("Lovelace Byron", "NAME")]),
        ("", []),
    ],
)  # fmt: skip
def test_rule_based_tagger(text, expected):
    (spans,) = RuleBasedTagger()([text])
    assert _spans_text(text, spans) == expected
    assert spans == sorted(spans)


def test_rule_based_tagger_docstring_example():
    assert RuleBasedTagger()(["Alan Turing was born in London on 23 June 1912."]) == [
        [(0, 11, "NAME"), (24, 30, "NAME"), (34, 46, "DATE")]
    ]


def test_resolve_overlaps_keeps_longest():
    spans = [(0, 2, "NUMBER"), (0, 13, "DATE"), (3, 8, "NAME"), (14, 16, "NAME"), (15, 20, "NUMBER"), (5, 5, "X")]
    assert resolve_overlaps(spans) == [(0, 13, "DATE"), (15, 20, "NUMBER")]
    # Ties go to the label with the lower priority, then to the earlier span.
    assert resolve_overlaps([(0, 4, "NAME"), (0, 4, "DATE")], priority={"DATE": 0, "NAME": 1}) == [(0, 4, "DATE")]
    assert resolve_overlaps([(2, 6, "A"), (0, 4, "A")]) == [(0, 4, "A")]


# ----------------------------------------------------------------------------------------------------------------
# char_spans_to_token_spans
# ----------------------------------------------------------------------------------------------------------------


def test_char_spans_to_token_spans():
    offsets = np.array([[0, 4], [5, 11], [12, 15], [15, 16]])
    spans = [(1, 3, "A"), (4, 5, "B"), (5, 16, "C"), (0, 6, "D"), (20, 30, "E")]
    # (1, 3) is inside token 0; (4, 5) is whitespace only; (0, 1), (0, 2) and (1, 4) overlap and are merged, with
    # the label of the first.
    assert char_spans_to_token_spans(spans, offsets) == ([[0, 4]], ["A"])
    assert char_spans_to_token_spans([(12, 13, "A"), (1, 3, "B")], offsets) == ([[0, 1], [2, 3]], ["B", "A"])
    assert char_spans_to_token_spans([], offsets) == ([], [])
    assert char_spans_to_token_spans([(0, 3, "A")], np.zeros((0, 2))) == ([], [])


# ----------------------------------------------------------------------------------------------------------------
# tag_salient_spans
# ----------------------------------------------------------------------------------------------------------------


def test_tag_salient_spans_exact(tokenizer):
    texts = [
        "Alan Turing was born in London on 23 June 1912. He met Ada Lovelace.\n\x00\x01\n",
        "Paris is big. It cost 3,000.50!",
    ]
    corpus = datasets.Dataset.from_dict({"doc_id": [7, 9], "text": texts, "title": ["a", "b"]})
    tagged = tag_salient_spans(corpus, tokenizer)
    assert tagged.features == salient_span_features()
    rows = tagged.to_list()
    assert [row["doc_id"] for row in rows] == [7, 7, 9, 9]
    # The control-character line has no wordpiece: it is dropped. "Paris is big." has no span: it is kept.
    assert [row["sentence"] for row in rows] == [
        "Alan Turing was born in London on 23 June 1912.",
        "He met Ada Lovelace.",
        "Paris is big.",
        "It cost 3,000.50!",
    ]
    tokens = [tokenizer.convert_ids_to_tokens(row["token_ids"]) for row in rows]
    assert tokens[0] == ["alan", "turing", "was", "born", "in", "london", "on", "23", "june", "1912", "."]
    assert tokens[3] == ["it", "cost", "3", ",", "000", ".", "50", "!"]
    assert [row["salient_spans"] for row in rows] == [[[0, 2], [5, 6], [7, 10]], [[2, 4]], [], [[2, 7]]]
    assert [row["salient_labels"] for row in rows] == [["NAME", "NAME", "DATE"], ["NAME"], [], ["NUMBER"]]
    for row in rows:
        expected = tokenizer(row["sentence"], add_special_tokens=False)["input_ids"]
        assert row["token_ids"] == expected


def test_tag_salient_spans_row_index_as_doc_id_and_custom_tagger(tokenizer):
    def tagger(texts):
        # crossing a sentence boundary, whitespace only, out of range (clipped), reversed, inside a word
        return [[(0, 30, "X"), (4, 5, "W"), (-5, 4, "A"), (9, 3, "R"), (15, 16, "P"), (22, 400, "Z")] for _ in texts]

    corpus = datasets.Dataset.from_dict({"text": ["alan was born. turing is big", "ada"]})
    rows = tag_salient_spans(corpus, tokenizer, tagger=tagger).to_list()
    assert [(row["doc_id"], row["sentence"]) for row in rows] == [
        (0, "alan was born."),
        (0, "turing is big"),
        (1, "ada"),
    ]
    # "alan" (clipped), "turing" (chars 15..16 fall inside it), "is big" (22..400 clipped to the text)
    assert [row["salient_spans"] for row in rows] == [[[0, 1]], [[0, 1], [1, 3]], [[0, 1]]]
    assert [row["salient_labels"] for row in rows] == [["A"], ["P", "Z"], ["A"]]


def test_tag_salient_spans_special_token_strings_are_text(tokenizer):
    corpus = datasets.Dataset.from_dict({"text": ["Alan met [MASK] in London."]})
    (row,) = tag_salient_spans(corpus, tokenizer).to_list()
    assert tokenizer.mask_token_id not in row["token_ids"]
    assert tokenizer.convert_ids_to_tokens(row["token_ids"])[2:5] == ["[", "mask", "]"]


def test_tag_salient_spans_multiprocess_matches(tokenizer):
    texts = ["Alan Turing was born in London on 23 June 1912. It cost 12%."] * 6 + ["Paris is big. I love Paris."] * 6
    corpus = datasets.Dataset.from_dict({"text": texts})
    single = tag_salient_spans(corpus, tokenizer, batch_size=4).to_list()
    multi = tag_salient_spans(corpus, tokenizer, batch_size=4, num_proc=2).to_list()
    assert single == multi


def test_tag_salient_spans_errors(tokenizer):
    corpus = datasets.Dataset.from_dict({"body": ["x"]})
    with pytest.raises(ValueError, match="Column 'text' is missing"):
        tag_salient_spans(corpus, tokenizer)
    with pytest.raises(ValueError, match="DatasetDict"):
        tag_salient_spans(datasets.DatasetDict({"train": corpus}), tokenizer)
    with pytest.raises(ValueError, match="returned spans for 0 texts"):
        tag_salient_spans(datasets.Dataset.from_dict({"text": ["x"]}), tokenizer, tagger=lambda texts: [])


def test_synthetic_corpus_answers_are_salient_spans(tmp_path):
    from realm_hf.demo.synthetic import make_synthetic_knowledge

    knowledge = make_synthetic_knowledge(num_people=12, num_cities=4, num_countries=2, seed=3)
    tok = build_tokenizer(knowledge.vocabulary(), tmp_path)
    tagged = tag_salient_spans(knowledge.documents, tok)
    index = {(row["doc_id"], row["sentence"]): row for row in tagged}
    # Every masked fact of the corpus (cities and years) is a salient span, so salient-span masking trains on them.
    for fact in knowledge.facts:
        row = index[(fact["doc_id"], fact["sentence"])]
        answer_ids = tok(fact["answer"], add_special_tokens=False)["input_ids"]
        spans = [row["token_ids"][s:e] for s, e in row["salient_spans"]]
        assert answer_ids in spans, (fact, row)


# ----------------------------------------------------------------------------------------------------------------
# Optional model-based taggers
# ----------------------------------------------------------------------------------------------------------------


def test_spacy_tagger_without_spacy(monkeypatch):
    monkeypatch.setitem(sys.modules, "spacy", None)
    with pytest.raises(ImportError, match="pip install spacy"):
        SpacyTagger()


class _FakeEnt:
    def __init__(self, start, end, label):
        self.start_char, self.end_char, self.label_ = start, end, label


def _fake_spacy(load_error=False):
    module = types.ModuleType("spacy")

    def load(name, **kwargs):
        if load_error:
            raise OSError(f"[E050] Can't find model '{name}'.")

        class _Nlp:
            def pipe(self, texts, batch_size):
                for text in texts:
                    doc = types.SimpleNamespace()
                    doc.ents = [_FakeEnt(0, 4, "PERSON"), _FakeEnt(5, len(text), "DATE")] if text else []
                    yield doc

        return _Nlp()

    module.load = load
    return module


def test_spacy_tagger_missing_model(monkeypatch):
    monkeypatch.setitem(sys.modules, "spacy", _fake_spacy(load_error=True))
    with pytest.raises(OSError, match="python -m spacy download en_core_web_sm"):
        SpacyTagger()


def test_spacy_tagger_plumbing(monkeypatch):
    monkeypatch.setitem(sys.modules, "spacy", _fake_spacy())
    tagger = SpacyTagger(labels=["PERSON"])
    assert tagger(["Alan 1912", ""]) == [[(0, 4, "PERSON")], []]
    assert SpacyTagger()(["Alan 1912"]) == [[(0, 4, "PERSON"), (5, 9, "DATE")]]
    restored = pickle.loads(pickle.dumps(tagger))  # only the arguments are pickled; the model is loaded again
    assert restored.labels == ["PERSON"] and restored(["Alan 1912"]) == [[(0, 4, "PERSON")]]


def test_transformers_ner_tagger_missing_model(tmp_path):
    with pytest.raises(OSError, match="hf download"):
        TransformersNERTagger(str(tmp_path / "no" / "such" / "model"))


def _tiny_token_classifier(tokenizer, bias_label: str):
    from transformers import BertConfig, BertForTokenClassification

    labels = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        max_position_embeddings=64,
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = BertForTokenClassification(config).eval()
    if bias_label is not None:
        # Make every token get `bias_label`, so that the expected entities are exact.
        with torch.no_grad():
            model.classifier.weight.zero_()
            model.classifier.bias.fill_(-10.0)
            model.classifier.bias[labels.index(bias_label)] = 10.0
    return model


def test_transformers_ner_tagger_plumbing(tokenizer):
    from transformers import pipeline

    texts = ["Alan Turing was born. Paris is big!", "", "ada"]
    # Random weights: only the output structure can be checked.
    random_tagger = TransformersNERTagger(_tiny_token_classifier(tokenizer, None), tokenizer=tokenizer, device="cpu")
    for text, spans in zip(texts, random_tagger(texts)):
        for start, end, label in spans:
            assert 0 <= start < end <= len(text) and label in {"PER", "LOC"}

    # Every token I-PER: one PER entity per sentence (the tagger runs sentence by sentence).
    tagger = TransformersNERTagger(_tiny_token_classifier(tokenizer, "I-PER"), tokenizer=tokenizer)
    assert tagger(texts) == [[(0, 21, "PER"), (22, 35, "PER")], [], [(0, 3, "PER")]]
    assert TransformersNERTagger(tagger.pipeline, labels=["LOC"])(texts) == [[], [], []]
    # A ready pipeline works too, and the tagger plugs into tag_salient_spans.
    ready = pipeline(
        "token-classification",
        model=_tiny_token_classifier(tokenizer, "I-LOC"),
        tokenizer=tokenizer,
        aggregation_strategy="simple",
    )
    corpus = datasets.Dataset.from_dict({"text": texts})
    rows = tag_salient_spans(corpus, tokenizer, tagger=TransformersNERTagger(ready)).to_list()
    assert [row["salient_spans"] for row in rows] == [[[0, 5]], [[0, 4]], [[0, 1]]]
    assert [row["salient_labels"] for row in rows] == [["LOC"], ["LOC"], ["LOC"]]


# ----------------------------------------------------------------------------------------------------------------
# Property tests on arbitrary Unicode
# ----------------------------------------------------------------------------------------------------------------

_PIECES = [
    "Alan", "Turing", "was", "born", "in", "London", "on", "23", "June", "1912", "March", "12,", "3,000.50", "12%",
    "Mr.", "J.", "of", "The", ".", "!", "?", "...", "\n", " ", "  ", "\t", "'s", "-", '"', "[MASK]", "[SEP]",
    "\U0001f600", "\U0001f468\u200d\U0001f469\u200d\U0001f467", "e\u0301", "a\u0308\u0301\u0323", "\u05e9\u05dc\u05d5\u05dd",
    "\u0645\u0631\u062d\u0628\u0627", "\u200f", "\u202e", "\u200b", "\x00", "\ufeff", "\uff13", "\u216b", "\u01c5",
    "\u0130", "\u4e2d\u6587\u3002", "\ud7a3", "\U00010348",
]  # fmt: skip
texts = st.one_of(
    st.text(),
    st.lists(st.sampled_from(_PIECES), max_size=40).map(" ".join),
    st.lists(st.sampled_from(_PIECES), max_size=40).map("".join),
    st.builds(lambda s, k: s * k, st.lists(st.sampled_from(_PIECES), min_size=1, max_size=8).map(" ".join),
              st.integers(100, 1500)),
)  # fmt: skip


@settings(max_examples=50, deadline=None)
@given(text=texts)
def test_split_sentences_property(text):
    spans = split_sentences(text)
    previous_end = 0
    for start, end in spans:
        assert previous_end <= start < end <= len(text)
        assert not text[start].isspace() and not text[end - 1].isspace()
        previous_end = end
    # Everything outside the sentences is whitespace.
    covered = np.zeros(len(text), dtype=bool)
    for start, end in spans:
        covered[start:end] = True
    assert all(char.isspace() for char, c in zip(text, covered) if not c)


@settings(max_examples=50, deadline=None)
@given(text=texts)
def test_rule_based_tagger_property(text):
    (spans,) = RuleBasedTagger()([text])
    previous_end = 0
    for start, end, label in spans:
        assert previous_end <= start < end <= len(text)
        assert label in {"DATE", "NUMBER", "NAME"}
        previous_end = end


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=st.lists(texts, max_size=4))
def test_tag_salient_spans_property(tokenizer, batch):
    corpus = datasets.Dataset.from_dict(
        {"text": batch}, features=datasets.Features({"text": datasets.Value("string")})
    )
    tagged = tag_salient_spans(corpus, tokenizer, keep_in_memory=True, desc=None)
    for row in tagged:
        assert 0 <= row["doc_id"] < len(batch)
        assert row["sentence"] in batch[row["doc_id"]]
        assert len(row["token_ids"]) > 0
        assert len(row["salient_spans"]) == len(row["salient_labels"])
        previous_end = 0
        for start, end in row["salient_spans"]:
            assert previous_end <= start < end <= len(row["token_ids"])
            previous_end = end


def test_make_tagger_builds_each_tagger_by_name_and_refuses_bad_requests():
    assert isinstance(make_tagger("rule"), RuleBasedTagger)
    with pytest.raises(ValueError, match="one of"):
        make_tagger("regex")
    with pytest.raises(ValueError, match="takes no model"):
        make_tagger("rule", "en_core_web_sm")
    with pytest.raises(ValueError, match="needs tagger_model"):
        make_tagger("ner")
    try:
        import spacy  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="spaCy"):
            make_tagger("spacy")
