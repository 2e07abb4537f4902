"""Passages of the user's own documents in a reply: the search made from the question, the
numbered sources the model is given with the system prompt, and the citations the reply
keeps (citation n is the source the answer cites as [n])."""

import html
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from services.chat.tokens import ChatTurn, ContextTooSmall, fit_to_context
from shared.stopwords import ENGLISH_STOPWORDS

# The documents service parses web-search syntax, where plain words are all required: a
# question searched as it is would rarely match. Its significant words OR-ed together
# match any passage that has one of them, and the ranking puts those with more first.
MAX_QUERY_WORDS = 24
# The documents search takes queries of up to 500 characters; no real word is this long.
MAX_QUERY_CHARS = 500
MAX_WORD_CHARS = 40
_WORD = re.compile(r"\w+")
_MARK = re.compile(r"</?mark>")
STOPWORDS = ENGLISH_STOPWORDS

SOURCES_INTRO = "Sources from the user's own documents, found for this message:"
SOURCES_INSTRUCTION = (
    "Answer from these sources and cite each one you use by its number in square brackets, "
    "like [1]. If they do not answer the question, say so."
)
NO_SOURCES = (
    "The user asked for an answer from their own documents, but no passage of them is given "
    "for this message: say so, and cite no source."
)


@dataclass(frozen=True)
class Source:
    document_id: uuid.UUID
    title: str
    page: int | None
    passage: str

    @property
    def label(self) -> str:
        return f"{self.title}, page {self.page}" if self.page is not None else self.title


def significant_words(text: str) -> list[str]:
    """The words of the text that are worth looking for, lower-cased, each once, in order."""
    words: list[str] = []
    for word in _WORD.findall(text.lower()):
        if len(word) > 1 and word not in STOPWORDS and word not in words:
            words.append(word)
    return words


def search_query(question: str) -> str | None:
    """The documents search for a question: its significant words OR-ed; None when it has
    none (nothing would match)."""
    query = ""
    words = [word for word in significant_words(question) if len(word) <= MAX_WORD_CHARS]
    for word in words[:MAX_QUERY_WORDS]:
        longer = f"{query} or {word}" if query else word
        if len(longer) > MAX_QUERY_CHARS:
            break
        query = longer
    return query or None


def passage_of(snippet: str) -> str:
    """A search snippet (HTML) as plain text on one line: without the `<mark>` around
    matches, its characters unescaped."""
    return " ".join(html.unescape(_MARK.sub("", snippet)).split())


def sources_block(sources: Sequence[Source]) -> str:
    if not sources:
        return NO_SOURCES
    numbered = [f"[{n}] {source.label}: {source.passage}" for n, source in enumerate(sources, 1)]
    return "\n".join([SOURCES_INTRO, *numbered, SOURCES_INSTRUCTION])


def system_turn(prompt: str | None, sources: Sequence[Source] | None) -> ChatTurn | None:
    """The one system message of a request: the conversation's prompt, then the sources when
    the user's documents were searched (`sources` is None when they were not). One message,
    because many chat templates take a single system message, and only first."""
    parts = [prompt] if prompt else []
    if sources is not None:
        parts.append(sources_block(sources))
    return {"role": "system", "content": "\n\n".join(parts)} if parts else None


def prompt_of(system: str, sources: Sequence[Source]) -> str | None:
    """The conversation's prompt in a system message made by `system_turn` with sources."""
    return system.removesuffix(sources_block(sources)).strip() or None


def fit_with_sources(
    prompt: str | None,
    sources: Sequence[Source] | None,
    history: Sequence[ChatTurn],
    new: ChatTurn,
    budget: int,
) -> tuple[list[ChatTurn], list[Source] | None]:
    """The turns of the request and the sources they hold. The prompt and the new message
    come first, then the sources (the lowest-ranked are left out when they do not all fit),
    then as much recent history as the rest of the budget holds. ContextTooSmall when the
    prompt and the new message alone are over the budget."""
    kept = list(sources) if sources is not None else None
    while True:
        try:
            return fit_to_context(system_turn(prompt, kept), history, new, budget), kept
        except ContextTooSmall:
            if not kept:
                raise
            kept.pop()


def citation(source: Source) -> dict[str, Any]:
    """As stored on the reply (JSON) and shown to clients."""
    return {
        "document_id": str(source.document_id),
        "title": source.title,
        "page": source.page,
        "snippet": source.passage,
    }
