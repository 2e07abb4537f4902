"""`lyceum-dev`: the offline development model, so that chat works with no key and no
network. It understands nothing: its answer is made from the request, the same answer for
the same request, streamed word by word like a real model's."""

import asyncio
from collections.abc import AsyncIterator, Sequence

from services.chat.providers.base import CompletionRequest, ModelInfo, Piece, Usage
from services.chat.settings import DEVELOPMENT_MODEL
from services.chat.sources import Source, prompt_of, significant_words
from services.chat.tokens import count_prompt_tokens, count_tokens

DESCRIPTION = (
    "Lyceum's offline development model: deterministic, streamed word by word, it echoes "
    "the request (and quotes the passage of your documents that shares the most words with "
    "it) and understands nothing. Set CHAT_PROVIDER_BASE_URL for a real model."
)
CONTEXT_WINDOW = 131072
QUOTED_WORDS = 40


def _quote(text: str, words: int = QUOTED_WORDS) -> str:
    parts = text.split()
    quoted = " ".join(parts[:words])
    return quoted + (" …" if len(parts) > words else "")


def best_source(question: str, sources: Sequence[Source]) -> int:
    """The index of the passage holding the most of the question's significant words; of
    equals, the best-ranked (the first)."""
    wanted = set(significant_words(question))

    def shared(index: int) -> int:
        return len(wanted.intersection(significant_words(sources[index].passage)))

    return max(range(len(sources)), key=lambda index: (shared(index), -index))


def answer_from(question: str, sources: Sequence[Source]) -> str:
    if not sources:
        return "No passage of your documents matched your message, so there is nothing to cite."
    best = best_source(question, sources)
    source = sources[best]
    answer = f"Your documents say, in {source.label}: “{_quote(source.passage)}” [{best + 1}]."
    others = [f"[{n}] {s.label}" for n, s in enumerate(sources, 1) if n != best + 1]
    if others:
        answer += f" Other sources found: {'; '.join(others)}."
    return answer


def compose_answer(request: CompletionRequest) -> str:
    system = next((turn["content"] for turn in request.messages if turn["role"] == "system"), None)
    if system is not None and request.sources is not None:
        system = prompt_of(system, request.sources)
    question = request.messages[-1]["content"]
    earlier = sum(1 for turn in request.messages[:-1] if turn["role"] != "system")
    sentences = [
        f"This is {DEVELOPMENT_MODEL}, the offline development model: it does not understand "
        "you, it shows that chat works end to end.",
        f"You wrote: “{_quote(question)}”.",
    ]
    if request.sources is not None:
        sentences.append(answer_from(question, request.sources))
    sentences.append(f"The conversation had {earlier} earlier messages.")
    if system is not None:
        sentences.append(f"The system prompt says: “{_quote(system, 12)}”.")
    sentences.append(
        "Point CHAT_PROVIDER_BASE_URL at an OpenAI-compatible server for real answers."
    )
    return " ".join(sentences)


class DevelopmentModel:
    def __init__(self, word_delay_seconds: float) -> None:
        self._word_delay = word_delay_seconds
        self.info = ModelInfo(DEVELOPMENT_MODEL, "lyceum", CONTEXT_WINDOW, DESCRIPTION)

    async def models(self) -> list[ModelInfo]:
        return [self.info]

    async def stream(self, request: CompletionRequest) -> AsyncIterator[Piece]:
        words = compose_answer(request).split(" ")
        limit = request.max_tokens
        sent = 0
        finish_reason = "stop"
        for index, word in enumerate(words):
            piece = word if index == 0 else f" {word}"
            cost = count_tokens(piece)
            if limit is not None and sent + cost > limit:
                finish_reason = "length"
                break
            if self._word_delay:
                await asyncio.sleep(self._word_delay)
            sent += cost
            yield Piece(text=piece)
        usage = Usage(count_prompt_tokens(request.messages), sent)
        yield Piece(finish_reason=finish_reason, usage=usage)

    async def close(self) -> None:
        return None
