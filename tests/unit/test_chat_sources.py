"""Passages of the user's documents in a reply's prompt: the search made from a question,
the numbered sources in the one system message, their tokens counted when the context is
cut, and the citations the reply keeps."""

import uuid

import pytest

from services.chat.sources import (
    NO_SOURCES,
    SOURCES_INSTRUCTION,
    Source,
    citation,
    fit_with_sources,
    passage_of,
    prompt_of,
    search_query,
    sources_block,
    system_turn,
)
from services.chat.tokens import ChatTurn, ContextTooSmall, count_prompt_tokens

ROMAN_LAW = Source(
    uuid.UUID("00000000-0000-4000-8000-000000000001"),
    "Roman law",
    3,
    "The Twelve Tables were the foundation of Roman law, set down in 451 BC.",
)
GRAMMAR = Source(
    uuid.UUID("00000000-0000-4000-8000-000000000002"),
    "Latin grammar notes",
    None,
    "Latin nouns fall into five declensions.",
)
AQUEDUCTS = Source(
    uuid.UUID("00000000-0000-4000-8000-000000000003"),
    "Engineering",
    12,
    "Aqueducts carried water into Rome from springs far away.",
)
QUESTION: ChatTurn = {"role": "user", "content": "When were the Twelve Tables written?"}
HISTORY: list[ChatTurn] = [
    {"role": "user", "content": "Tell me about Roman law."},
    {"role": "assistant", "content": "It grew over a thousand years, from custom to codes."},
]


def test_the_search_ors_the_significant_words_of_the_question() -> None:
    assert search_query("When were the Twelve Tables written?") == "twelve or tables or written"
    # Each word once, in order; stopwords, one-letter words and punctuation dropped; no
    # syntax of the user's survives (quotes, exclusions, OR).
    assert search_query('What is "Roman law" -Greek OR roman, LAW? a') == ("roman or law or greek")
    assert search_query("naïve café — Ελληνικά") == "naïve or café or ελληνικά"


def test_a_question_with_nothing_to_look_for_searches_nothing() -> None:
    assert search_query("What is it, and why?") is None


def test_the_query_stays_within_what_the_search_takes() -> None:
    assert search_query("0" * 5000) is None
    assert search_query("x" * 41 + " tables") == "tables"
    many = " ".join(f"word{n:02d}{'a' * 30}" for n in range(30))
    query = search_query(many)
    assert query is not None
    assert len(query) <= 500
    assert query.startswith("word00")
    assert search_query("   ?! ") is None


def test_long_questions_search_their_first_words() -> None:
    question = " ".join(f"word{n}" for n in range(40))
    assert search_query(question) == " or ".join(f"word{n}" for n in range(24))


def test_a_snippet_becomes_a_plain_passage_on_one_line() -> None:
    snippet = "The <mark>Twelve</mark> <mark>Tables</mark> were\nthe foundation  of law"
    assert passage_of(snippet) == "The Twelve Tables were the foundation of law"
    escaped = "<mark>Law</mark> &amp; order &lt;b&gt;"
    assert passage_of(escaped) == "Law & order <b>"
    assert passage_of("a < b and <b>bold</b>") == "a < b and <b>bold</b>"


def test_sources_are_numbered_in_their_order_with_title_and_page() -> None:
    block = sources_block([ROMAN_LAW, GRAMMAR, AQUEDUCTS])
    lines = block.splitlines()
    assert lines[1] == (
        "[1] Roman law, page 3: The Twelve Tables were the foundation of Roman law, set "
        "down in 451 BC."
    )
    assert lines[2] == "[2] Latin grammar notes: Latin nouns fall into five declensions."
    assert lines[3].startswith("[3] Engineering, page 12: Aqueducts")
    assert lines[-1] == SOURCES_INSTRUCTION
    assert "[1]" in SOURCES_INSTRUCTION


def test_a_search_that_found_nothing_is_said_to_the_model() -> None:
    assert sources_block([]) == NO_SOURCES
    assert system_turn(None, []) == {"role": "system", "content": NO_SOURCES}


def test_the_prompt_and_the_sources_are_one_system_message() -> None:
    prompt = "You are a patient tutor."
    assert system_turn(None, None) is None
    assert system_turn(prompt, None) == {"role": "system", "content": prompt}
    turn = system_turn(prompt, [ROMAN_LAW])
    assert turn is not None
    assert turn["content"] == f"{prompt}\n\n{sources_block([ROMAN_LAW])}"
    assert prompt_of(turn["content"], [ROMAN_LAW]) == prompt
    only_sources = system_turn(None, [ROMAN_LAW])
    assert only_sources is not None
    assert prompt_of(only_sources["content"], [ROMAN_LAW]) is None


def test_everything_fits_in_a_large_window() -> None:
    sources = [ROMAN_LAW, GRAMMAR, AQUEDUCTS]
    turns, kept = fit_with_sources("Be brief.", sources, HISTORY, QUESTION, 10_000)
    assert kept == sources
    assert turns == [system_turn("Be brief.", sources), *HISTORY, QUESTION]


def test_the_sources_count_in_the_context_and_come_before_the_history() -> None:
    sources = [ROMAN_LAW, GRAMMAR, AQUEDUCTS]
    with_sources = system_turn(None, sources)
    assert with_sources is not None
    # Room for the sources and the question, not for the history.
    budget = count_prompt_tokens([with_sources, QUESTION])
    turns, kept = fit_with_sources(None, sources, HISTORY, QUESTION, budget)
    assert kept == sources
    assert turns == [with_sources, QUESTION]
    assert count_prompt_tokens(turns) <= budget
    # Without sources the same budget holds the history.
    turns, kept = fit_with_sources(None, None, HISTORY, QUESTION, budget)
    assert kept is None
    assert turns == [*HISTORY, QUESTION]


def test_the_lowest_ranked_sources_are_left_out_when_they_do_not_all_fit() -> None:
    two = system_turn(None, [ROMAN_LAW, GRAMMAR])
    assert two is not None
    budget = count_prompt_tokens([two, QUESTION])
    turns, kept = fit_with_sources(None, [ROMAN_LAW, GRAMMAR, AQUEDUCTS], HISTORY, QUESTION, budget)
    assert kept == [ROMAN_LAW, GRAMMAR]
    assert turns == [two, QUESTION]


def test_a_question_too_long_even_without_sources_is_refused() -> None:
    budget = count_prompt_tokens([QUESTION]) - 1
    with pytest.raises(ContextTooSmall):
        fit_with_sources(None, [ROMAN_LAW], [], QUESTION, budget)


def test_a_citation_is_what_clients_see() -> None:
    assert citation(ROMAN_LAW) == {
        "document_id": "00000000-0000-4000-8000-000000000001",
        "title": "Roman law",
        "page": 3,
        "snippet": ROMAN_LAW.passage,
    }
    assert citation(GRAMMAR)["page"] is None
