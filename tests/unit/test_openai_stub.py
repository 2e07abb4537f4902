"""The stub provider, driven by the official `openai` client as the chat service drives a
real provider."""

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator

import httpx
import openai
import pytest
from openai import AsyncOpenAI, AsyncStream
from openai.types.chat import ChatCompletionChunk, ChatCompletionMessageParam

from tests.openai_stub import OpenAIStub

MESSAGES: list[ChatCompletionMessageParam] = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Say something."},
]


@pytest.fixture
async def stub() -> AsyncIterator[OpenAIStub]:
    async with OpenAIStub() as running:
        yield running


async def read_contents(stream: AsyncStream[ChatCompletionChunk], into: list[str]) -> None:
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            into.append(chunk.choices[0].delta.content)


def client_for(stub: OpenAIStub, api_key: str = "test-key") -> AsyncOpenAI:
    return AsyncOpenAI(base_url=stub.base_url, api_key=api_key, max_retries=0, timeout=5)


async def test_streams_the_tokens_then_the_usage_chunk(stub: OpenAIStub) -> None:
    stub.tokens = 5
    async with client_for(stub) as client:
        stream = await client.chat.completions.create(
            model="stub-model",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]

    assert chunks[0].choices[0].delta.role == "assistant"
    contents = [c.choices[0].delta.content for c in chunks[1:-2]]
    assert contents == ["w1 ", "w2 ", "w3 ", "w4 ", "w5 "]
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert all(c.choices[0].finish_reason is None for c in chunks[:-2])
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.prompt_tokens == 1002  # 1000 + two messages
    assert chunks[-1].usage.completion_tokens == 5
    assert chunks[-1].usage.total_tokens == 1007
    assert len({c.id for c in chunks}) == 1
    assert stub.finished_streams == 1
    assert stub.open_streams == 0


async def test_no_usage_chunk_unless_asked_and_the_reply_words_join_back(
    stub: OpenAIStub,
) -> None:
    stub.reply = "Two words."
    async with client_for(stub) as client:
        stream = await client.chat.completions.create(
            model="stub-model",
            messages=MESSAGES,
            stream=True,
        )
        chunks = [chunk async for chunk in stream]

    assert [c.choices[0].delta.content for c in chunks[1:-1]] == ["Two ", "words."]
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.usage is None for c in chunks)
    assert stub.reply_text() == "Two words."


async def test_max_tokens_cuts_the_reply_with_finish_reason_length(stub: OpenAIStub) -> None:
    stub.tokens = 10
    async with client_for(stub) as client:
        stream = await client.chat.completions.create(
            model="stub-model",
            messages=MESSAGES,
            stream=True,
            max_tokens=3,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
        whole = await client.chat.completions.create(
            model="stub-model",
            messages=MESSAGES,
            max_completion_tokens=4,
        )

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "w1 w2 w3 "
    assert chunks[-2].choices[0].finish_reason == "length"
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 3
    assert whole.choices[0].finish_reason == "length"
    assert whole.choices[0].message.content == "w1 w2 w3 w4 "
    assert whole.usage is not None
    assert whole.usage.completion_tokens == 4


async def test_a_whole_completion_and_the_recorded_requests(stub: OpenAIStub) -> None:
    stub.prompt_tokens = 77
    async with client_for(stub) as client:
        completion = await client.chat.completions.create(
            model="any-model",
            messages=MESSAGES,
            extra_headers={"X-Request-ID": "abc"},
        )

    assert completion.object == "chat.completion"
    assert completion.model == "any-model"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content == stub.reply_text()
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == 77
    assert completion.usage.completion_tokens == len(stub.reply_tokens())
    [recorded] = stub.requests
    assert recorded.headers["authorization"] == "Bearer test-key"
    assert recorded.headers["x-request-id"] == "abc"
    assert recorded.body["model"] == "any-model"
    assert recorded.body["messages"] == MESSAGES


async def test_fail_status_gives_an_api_status_error(stub: OpenAIStub) -> None:
    stub.fail_status = 503
    async with client_for(stub) as client:
        with pytest.raises(openai.APIStatusError) as raised:
            await client.chat.completions.create(
                model="stub-model",
                messages=MESSAGES,
                stream=True,
            )
    assert raised.value.status_code == 503
    assert isinstance(raised.value.body, dict)
    assert raised.value.body["type"] == "server_error"


async def test_fail_times_fails_the_first_requests_only(stub: OpenAIStub) -> None:
    stub.fail_status, stub.fail_times = 429, 2
    async with client_for(stub) as client:
        for _ in range(2):
            with pytest.raises(openai.RateLimitError):
                await client.chat.completions.create(
                    model="stub-model",
                    messages=MESSAGES,
                )
        completion = await client.chat.completions.create(
            model="stub-model",
            messages=MESSAGES,
        )
    assert completion.choices[0].message.content == stub.reply_text()
    assert len(stub.requests) == 3
    assert stub.fail_times == 0


async def test_models_are_listed(stub: OpenAIStub) -> None:
    stub.models = ["alpha", "beta"]
    async with client_for(stub) as client:
        models = [model async for model in client.models.list()]
    assert [m.id for m in models] == ["alpha", "beta"]
    assert {m.owned_by for m in models} == {"stub"}


async def test_the_api_key_is_enforced() -> None:
    async with OpenAIStub(api_key="sk-right") as stub:
        async with client_for(stub, api_key="sk-wrong") as client:
            with pytest.raises(openai.AuthenticationError):
                await client.chat.completions.create(
                    model="stub-model",
                    messages=MESSAGES,
                )
            with pytest.raises(openai.AuthenticationError):
                await client.models.list()
        async with client_for(stub, api_key="sk-right") as client:
            completion = await client.chat.completions.create(
                model="stub-model",
                messages=MESSAGES,
            )
            assert completion.choices[0].message.content == stub.reply_text()


async def test_cut_after_ends_the_stream_with_an_error_in_the_client(stub: OpenAIStub) -> None:
    stub.tokens, stub.cut_after = 10, 3
    received: list[str] = []
    async with client_for(stub) as client:
        stream = await client.chat.completions.create(
            model="stub-model",
            messages=MESSAGES,
            stream=True,
        )
        with pytest.raises(openai.APIConnectionError):
            await read_contents(stream, received)
    assert "".join(received) == "w1 w2 w3 "
    assert stub.finished_streams == 0


async def test_a_client_that_leaves_mid_stream_is_counted(stub: OpenAIStub) -> None:
    stub.tokens, stub.interval = 100, 0.02
    async with client_for(stub) as client:
        stream = await client.chat.completions.create(
            model="stub-model",
            messages=MESSAGES,
            stream=True,
        )
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                break
        assert stub.open_streams == 1
        await stream.close()
    for _ in range(100):
        if stub.dropped_streams:
            break
        await asyncio.sleep(0.02)
    assert stub.dropped_streams == 1
    assert stub.open_streams == 0
    assert stub.finished_streams == 0


async def test_interval_and_first_token_delay_pace_the_stream(stub: OpenAIStub) -> None:
    stub.tokens, stub.interval, stub.first_token_delay = 4, 0.05, 0.2
    arrivals: list[float] = []
    async with client_for(stub) as client:
        started = time.monotonic()
        stream = await client.chat.completions.create(
            model="stub-model",
            messages=MESSAGES,
            stream=True,
        )
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                arrivals.append(time.monotonic() - started)
    assert len(arrivals) == 4
    assert arrivals[0] >= 0.2
    assert arrivals[-1] - arrivals[0] >= 3 * 0.05 * 0.9


async def test_hang_times_the_client_out_and_stop_does_not_wait_for_it() -> None:
    stub = await OpenAIStub(hang=True).start()
    async with AsyncOpenAI(
        base_url=stub.base_url, api_key="k", max_retries=0, timeout=0.3
    ) as client:
        with pytest.raises(openai.APITimeoutError):
            await client.chat.completions.create(
                model="stub-model",
                messages=MESSAGES,
            )
        # A request left hanging, and a stream left open, at the time the stub stops.
        stub.hang = False
        stub.tokens, stub.interval = 1000, 1.0
        stream = await client.chat.completions.create(
            model="stub-model",
            messages=MESSAGES,
            stream=True,
        )
        stub.hang = True
        hanging = asyncio.create_task(
            client.with_options(timeout=30).chat.completions.create(
                model="stub-model",
                messages=MESSAGES,
            )
        )
        await asyncio.sleep(0.1)
        assert stub.open_streams == 1
        started = time.monotonic()
        await asyncio.wait_for(stub.stop(), 5)
        assert time.monotonic() - started < 2
        assert stub.dropped_streams == 1
        with pytest.raises(openai.APIConnectionError):
            await hanging
        with pytest.raises(openai.APIConnectionError):
            await read_contents(stream, [])


def test_runs_in_a_thread_for_synchronous_code() -> None:
    with OpenAIStub(tokens=2) as stub:
        response = httpx.post(
            f"{stub.base_url}/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
        )
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == "w1 w2 "
    assert response.json()["usage"]["prompt_tokens"] == 1001


def test_runs_as_a_process_of_its_own() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.openai_stub", "--tokens", "3", "--models", "a,b"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("OpenAI stub ready: http://127.0.0.1:")
        base_url = line.split(": ", 1)[1].strip()
        models = httpx.get(f"{base_url}/models").json()
        assert [m["id"] for m in models["data"]] == ["a", "b"]
        stream = httpx.post(
            f"{base_url}/chat/completions",
            json={"model": "a", "messages": [], "stream": True},
        )
        assert stream.headers["content-type"].startswith("text/event-stream")
        assert stream.text.count('"content":"w') == 3
        assert stream.text.endswith("data: [DONE]\n\n")
    finally:
        process.terminate()
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()
