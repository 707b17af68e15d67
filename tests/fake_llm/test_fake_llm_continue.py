"""continue_final_message: the emulator goes on from a final assistant message, as SGLang does, so an
answer interrupted and continued any number of times is, in the end, the uninterrupted one."""

from __future__ import annotations

from typing import Any

import openai
import pytest

ASK: list[Any] = [{"role": "user", "content": "Tell me a long story. [[arkq:tokens=60]]"}]
CONTINUE = {"continue_final_message": True}


async def streamed(client: openai.AsyncOpenAI, messages: list[Any], **kwargs: Any) -> tuple[list[str], Any]:
    stream = await client.chat.completions.create(
        model="m", messages=messages, stream=True, stream_options={"include_usage": True}, **kwargs
    )
    pieces, finish, usage = [], None, None
    async for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            pieces += [choice.delta.content] if choice.delta.content else []
            finish = choice.finish_reason or finish
    return pieces, (finish, usage)


async def test_three_continuations_give_the_uninterrupted_answer_token_for_token(
    client: openai.AsyncOpenAI,
) -> None:
    whole, (finish, _) = await streamed(client, ASK, max_tokens=50)
    assert len(whole) == 50 and finish == "length"
    got: list[str] = []
    for cut in (7, 20, 33):  # interrupted after 7, 20 and 33 tokens, continued each time
        messages, extra = ASK, {}
        if got:
            messages, extra = [*ASK, {"role": "assistant", "content": "".join(got)}], {"extra_body": CONTINUE}
        pieces, _ = await streamed(client, messages, max_tokens=50 - len(got), **extra)
        got += pieces[: cut - len(got)]
    rest, (finish, usage) = await streamed(
        client,
        [*ASK, {"role": "assistant", "content": "".join(got)}],
        max_tokens=50 - 33,
        extra_body=CONTINUE,
    )
    assert got + rest == whole
    assert finish == "length" and usage.completion_tokens == len(rest) == 17


async def test_a_prefix_that_ends_inside_a_token_gets_the_rest_of_it(client: openai.AsyncOpenAI) -> None:
    whole, _ = await streamed(client, ASK)
    prefix = "".join(whole[:3]) + whole[3][:2]
    rest, _ = await streamed(client, [*ASK, {"role": "assistant", "content": prefix}], extra_body=CONTINUE)
    assert rest[0] == whole[3][2:] and prefix + "".join(rest) == "".join(whole)


async def test_without_the_flag_a_final_assistant_message_is_a_new_turn(client: openai.AsyncOpenAI) -> None:
    whole, _ = await streamed(client, ASK)
    again, _ = await streamed(client, [*ASK, {"role": "assistant", "content": "".join(whole[:5])}])
    assert "".join(again) != "".join(whole[5:])  # not a continuation: a fresh answer


async def test_text_that_is_not_the_answer_is_followed_by_other_words(client: openai.AsyncOpenAI) -> None:
    first, _ = await streamed(
        client, [*ASK, {"role": "assistant", "content": "Once upon"}], extra_body=CONTINUE
    )
    second, _ = await streamed(
        client, [*ASK, {"role": "assistant", "content": "Once upon"}], extra_body=CONTINUE
    )
    assert first == second and len(first) == 60 and first[0].startswith(" ")


async def test_a_server_without_the_parameter_refuses_it(client: openai.AsyncOpenAI) -> None:
    refusing = [{"role": "user", "content": "Go on. [[arkq:refuse_continue=1]]"}]
    assert (await client.chat.completions.create(model="m", messages=refusing)).choices[0].message.content
    with pytest.raises(
        openai.BadRequestError, match="Unrecognized request argument supplied: continue_final_message"
    ):
        await client.chat.completions.create(
            model="m", messages=[*refusing, {"role": "assistant", "content": "So"}], extra_body=CONTINUE
        )
