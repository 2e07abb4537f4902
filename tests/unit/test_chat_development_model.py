"""The offline development model `lyceum-dev`: deterministic, streamed word by word, its
answer made from the request (quoting and citing the passage of the user's documents that
matches the question best, when it has sources), cut by `max_tokens`, with a usage report
at the end."""

import uuid

import pytest

from services.chat.providers.base import CompletionRequest, Piece
from services.chat.providers.development import DevelopmentModel, best_source, compose_answer
from services.chat.settings import DEVELOPMENT_MODEL
from services.chat.sources import Source, system_turn
from services.chat.tokens import ChatTurn, count_prompt_tokens, count_tokens

SYSTEM_PROMPT = "Answer like a Roman senator addressing the forum."
MESSAGES: list[ChatTurn] = [
    {"role": "system", "content": SYSTEM_PROMPT},
    {"role": "user", "content": "What is a declension?"},
    {"role": "assistant", "content": "A pattern of endings."},
    {"role": "user", "content": "How many declensions does Latin have?"},
]


def request(
    messages: list[ChatTurn] = MESSAGES, max_tokens: int | None = None
) -> CompletionRequest:
    return CompletionRequest(model=DEVELOPMENT_MODEL, messages=messages, max_tokens=max_tokens)


def user(content: str) -> ChatTurn:
    return {"role": "user", "content": content}


async def pieces_of(request: CompletionRequest) -> list[Piece]:
    model = DevelopmentModel(word_delay_seconds=0)
    try:
        return [piece async for piece in model.stream(request)]
    finally:
        await model.close()


async def test_the_same_request_streams_the_same_pieces() -> None:
    first = await pieces_of(request())
    second = await pieces_of(request())
    assert first == second
    assert len(first) > 10


async def test_the_pieces_join_to_the_composed_answer() -> None:
    pieces = await pieces_of(request())
    *text_pieces, last = pieces
    assert all(piece.text and piece.finish_reason is None for piece in text_pieces)
    assert all(piece.usage is None for piece in text_pieces)
    assert "".join(piece.text for piece in pieces) == compose_answer(request())
    assert last.text == ""
    assert last.finish_reason == "stop"
    # Word by word: every piece after the first is one space and one word.
    assert all(
        piece.text.startswith(" ") and " " not in piece.text[1:] for piece in text_pieces[1:]
    )


async def test_the_answer_echoes_the_question_the_history_and_the_system_prompt() -> None:
    answer = compose_answer(request())
    assert DEVELOPMENT_MODEL in answer
    assert "How many declensions does Latin have?" in answer
    assert "The conversation had 2 earlier messages." in answer
    assert SYSTEM_PROMPT in answer


def test_no_system_prompt_is_mentioned_when_there_is_none() -> None:
    answer = compose_answer(request(MESSAGES[1:]))
    assert "system prompt" not in answer
    assert SYSTEM_PROMPT not in answer
    assert "The conversation had 2 earlier messages." in answer


def test_long_texts_are_quoted_in_part() -> None:
    question = " ".join(f"word{i}" for i in range(100))
    system = " ".join(f"rule{i}" for i in range(30))
    answer = compose_answer(request([{"role": "system", "content": system}, user(question)]))
    assert "word39 …" in answer
    assert "word40" not in answer
    assert "rule11 …" in answer
    assert "rule12" not in answer


async def test_usage_comes_with_the_last_piece() -> None:
    pieces = await pieces_of(request())
    last = pieces[-1]
    assert last.usage is not None
    assert last.usage.prompt_tokens == count_prompt_tokens(MESSAGES)
    assert last.usage.completion_tokens == sum(count_tokens(piece.text) for piece in pieces)
    assert last.usage.total_tokens == last.usage.prompt_tokens + last.usage.completion_tokens


@pytest.mark.parametrize("max_tokens", [0, 1, 5, 17])
async def test_max_tokens_cuts_the_answer(max_tokens: int) -> None:
    pieces = await pieces_of(request(max_tokens=max_tokens))
    last = pieces[-1]
    text = "".join(piece.text for piece in pieces)
    assert last.finish_reason == "length"
    assert last.usage is not None
    assert last.usage.completion_tokens <= max_tokens
    assert last.usage.completion_tokens == sum(count_tokens(piece.text) for piece in pieces)
    assert last.usage.prompt_tokens == count_prompt_tokens(MESSAGES)
    full = compose_answer(request())
    assert full.startswith(text)
    assert len(text) < len(full)
    # Cut before the first word that would not have fitted.
    rest = full[len(text) :]
    next_piece = " " + rest[1:].split(" ")[0] if text else rest.split(" ")[0]
    assert last.usage.completion_tokens + count_tokens(next_piece) > max_tokens


async def test_max_tokens_exactly_the_answer_finishes_normally() -> None:
    whole = await pieces_of(request())
    usage = whole[-1].usage
    assert usage is not None
    pieces = await pieces_of(request(max_tokens=usage.completion_tokens))
    assert pieces == whole
    assert pieces[-1].finish_reason == "stop"
    cut = await pieces_of(request(max_tokens=usage.completion_tokens - 1))
    assert cut[-1].finish_reason == "length"


async def test_the_model_lists_itself() -> None:
    model = DevelopmentModel(word_delay_seconds=0)
    [info] = await model.models()
    assert info.id == DEVELOPMENT_MODEL
    assert info.context_window > 0


# --- answering from the user's documents ---

TABLES = Source(
    uuid.UUID("00000000-0000-4000-8000-00000000000a"),
    "Roman law",
    3,
    "The Twelve Tables were the foundation of Roman law, set down in 451 BC.",
)
DECLENSIONS = Source(
    uuid.UUID("00000000-0000-4000-8000-00000000000b"),
    "Latin grammar",
    7,
    "Latin nouns fall into five declensions, told apart by the genitive singular.",
)
NOTES = Source(uuid.UUID("00000000-0000-4000-8000-00000000000c"), "Notes", None, "Misc notes.")


def with_sources(
    question: str, sources: list[Source], prompt: str | None = None
) -> CompletionRequest:
    system = system_turn(prompt, sources)
    turns: list[ChatTurn] = [system] if system is not None else []
    return CompletionRequest(
        model=DEVELOPMENT_MODEL, messages=[*turns, user(question)], sources=tuple(sources)
    )


def test_the_answer_quotes_the_passage_that_matches_the_question_and_cites_it() -> None:
    answer = compose_answer(
        with_sources("How many declensions do Latin nouns have?", [TABLES, DECLENSIONS, NOTES])
    )
    assert (
        "Your documents say, in Latin grammar, page 7: “Latin nouns fall into five declensions, "
        "told apart by the genitive singular.” [2]."
    ) in answer
    assert "Other sources found: [1] Roman law, page 3; [3] Notes." in answer
    assert "Twelve Tables" not in answer
    assert "How many declensions do Latin nouns have?" in answer
    assert "The conversation had 0 earlier messages." in answer


def test_of_passages_as_good_as_each_other_the_best_ranked_is_quoted() -> None:
    question = "Tell me something"
    assert best_source(question, [NOTES, TABLES]) == 0
    answer = compose_answer(with_sources(question, [NOTES, TABLES]))
    assert "in Notes: “Misc notes.” [1]." in answer


def test_the_same_sources_give_the_same_answer() -> None:
    request = with_sources("When were the Twelve Tables set down?", [DECLENSIONS, TABLES])
    assert compose_answer(request) == compose_answer(request)
    assert "“The Twelve Tables were the foundation of Roman law, set down in 451 BC.” [2]." in (
        compose_answer(request)
    )


def test_the_system_prompt_is_quoted_without_the_sources() -> None:
    answer = compose_answer(with_sources("Twelve Tables?", [TABLES], prompt=SYSTEM_PROMPT))
    assert f"The system prompt says: “{SYSTEM_PROMPT}”." in answer
    assert "[1]." in answer
    alone = compose_answer(with_sources("Twelve Tables?", [TABLES]))
    assert "system prompt" not in alone


def test_a_search_that_found_nothing_is_said_and_nothing_is_cited() -> None:
    answer = compose_answer(with_sources("Anything about aqueducts?", []))
    assert "No passage of your documents matched your message" in answer
    assert "[1]" not in answer
    assert "system prompt" not in answer


def test_without_sources_the_documents_are_not_mentioned() -> None:
    assert "documents" not in compose_answer(request())


async def test_an_answer_from_sources_streams_like_any_other() -> None:
    request = with_sources("How many declensions?", [TABLES, DECLENSIONS])
    pieces = await pieces_of(request)
    assert "".join(piece.text for piece in pieces) == compose_answer(request)
    assert pieces[-1].usage is not None
    assert pieces[-1].usage.prompt_tokens == count_prompt_tokens(request.messages)
