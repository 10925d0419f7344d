"""The Python clients users point at the gateway, unchanged: the OpenAI SDK with its helpers,
LangChain and the LiteLLM SDK. Started by python.test.mjs, which runs the built worker under
workerd in front of the fake Databricks and passes:

GATEWAY_URL   the gateway's base URL (no /v1)
GATEWAY_KEY   its master key
CONTROL_URL   the harness's view of the fake: GET /last-usage (the usage the fake reported for
              its last answer), GET /requests (how many requests it has served), POST /reset
"""

import json
import os
import urllib.request

import litellm
import openai
import pytest
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI, OpenAIEmbeddings
from pydantic import BaseModel, Field

URL = os.environ["GATEWAY_URL"]
KEY = os.environ["GATEWAY_KEY"]
CONTROL = os.environ["CONTROL_URL"]
CHAT = "databricks-gpt-5-1"
EMBEDDING = "databricks-gte-large-en"


def control(path, method="GET"):
    request = urllib.request.Request(f"{CONTROL}{path}", method=method)
    with urllib.request.urlopen(request) as response:
        return json.loads(response.read())


def real_usage():
    """The usage the fake Databricks reported for the last answer."""
    return control("/last-usage")


@pytest.fixture(autouse=True)
def fresh_fake():
    control("/reset", method="POST")


class Weather(BaseModel):
    """The weather in a city."""

    city: str


class Person(BaseModel):
    name: str
    age: int = Field(ge=18)
    hobbies: list[str]


WEATHER_TOOL = openai.pydantic_function_tool(Weather, name="get_weather")


def client(**options):
    return openai.OpenAI(base_url=f"{URL}/v1", api_key=KEY, **options)


# ---------------------------------------------------------------------------------- OpenAI SDK


def test_openai_stream_helper_text_with_usage():
    with client().chat.completions.stream(
        model=CHAT,
        messages=[{"role": "user", "content": "stream me please"}],
        stream_options={"include_usage": True},
    ) as stream:
        text = "".join(e.delta for e in stream if e.type == "content.delta")
        final = stream.get_final_completion()
    assert text == "Echo: stream me please"
    assert final.choices[0].message.content == text
    real = real_usage()
    assert (final.usage.prompt_tokens, final.usage.completion_tokens) == (real["prompt_tokens"], real["completion_tokens"])


def test_openai_stream_helper_tools():
    with client().chat.completions.stream(
        model=CHAT,
        messages=[{"role": "user", "content": "Weather in Paris? [fake:tool]"}],
        tools=[WEATHER_TOOL],
    ) as stream:
        for _ in stream:
            pass
        final = stream.get_final_completion()
    call = final.choices[0].message.tool_calls[0]
    assert call.type == "function"
    assert call.function.name == "get_weather"
    assert call.function.parsed_arguments == Weather(city="Paris")
    assert final.choices[0].finish_reason == "tool_calls"


def test_openai_parse_with_a_pydantic_model():
    completion = client().chat.completions.parse(
        model=CHAT, messages=[{"role": "user", "content": "Ann"}], response_format=Person
    )
    person = completion.choices[0].message.parsed
    assert isinstance(person, Person)
    assert person.age >= 18
    with client().chat.completions.stream(
        model=CHAT, messages=[{"role": "user", "content": "Ann"}], response_format=Person
    ) as stream:
        for _ in stream:
            pass
        assert stream.get_final_completion().choices[0].message.parsed == person


def test_openai_does_not_retry_what_the_gateway_retried():
    with pytest.raises(openai.InternalServerError):
        client(max_retries=2).chat.completions.create(
            model=CHAT, messages=[{"role": "user", "content": "fail [fake:error=500]"}]
        )
    # The gateway's three attempts (num_retries: 2), and no client retry on top.
    assert control("/requests") == 3


# ---------------------------------------------------------------------------------- LangChain


def lc_chat(**options):
    return ChatOpenAI(model=CHAT, base_url=f"{URL}/v1", api_key=KEY, max_retries=0, **options)


def assert_usage(usage_metadata):
    real = real_usage()
    assert usage_metadata["input_tokens"] == real["prompt_tokens"]
    assert usage_metadata["output_tokens"] == real["completion_tokens"]
    assert usage_metadata["total_tokens"] == real["total_tokens"]


def test_langchain_stream_usage_counts_once():
    chunks = list(lc_chat(stream_usage=True).stream("count my tokens please"))
    message = chunks[0]
    for chunk in chunks[1:]:
        message = message + chunk
    assert message.content == "Echo: count my tokens please"
    assert_usage(message.usage_metadata)


@tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return "18 C"


@pytest.mark.parametrize("strict", [None, True])
def test_langchain_bind_tools_streamed_and_invoked(strict):
    model = lc_chat(stream_usage=True).bind_tools([get_weather], strict=strict)
    chunks = list(model.stream("Weather in Paris? [fake:tool]"))
    message = chunks[0]
    for chunk in chunks[1:]:
        message = message + chunk
    assert message.tool_calls[0]["name"] == "get_weather"
    assert message.tool_calls[0]["args"] == {"city": "Paris"}
    assert_usage(message.usage_metadata)
    answer = model.invoke("Weather in Paris? [fake:tool]")
    assert answer.tool_calls[0]["args"] == {"city": "Paris"}


def test_langchain_with_structured_output():
    person = lc_chat().with_structured_output(Person).invoke("Ann")
    assert isinstance(person, Person)
    assert person.age >= 18


def test_langchain_embeddings_with_their_defaults():
    # Defaults: texts go as cl100k token ids (tiktoken), which the gateway decodes.
    embeddings = OpenAIEmbeddings(model=EMBEDDING, base_url=f"{URL}/v1", api_key=KEY, max_retries=0)
    texts = ["hello world", "Grüße, 世界! ✓"]
    vectors = embeddings.embed_documents(texts)
    assert len(vectors) == 2 and all(len(v) == 1024 for v in vectors)
    # The same vectors as for the texts themselves (both as the SDKs' base64, so as 32-bit floats).
    by_text = client().embeddings.create(model=EMBEDDING, input=texts)
    assert vectors == [d.embedding for d in by_text.data]
    assert embeddings.embed_query("hello world") == vectors[0]


# ---------------------------------------------------------------------------------- LiteLLM SDK


def lite(**kwargs):
    return {"api_base": f"{URL}/v1", "api_key": KEY, "num_retries": 0, **kwargs}


def test_litellm_completion_streamed_with_usage():
    answer = litellm.completion(model=f"openai/{CHAT}", messages=[{"role": "user", "content": "Hello"}], **lite())
    assert answer.choices[0].message.content == "Echo: Hello"
    chunks = list(
        litellm.completion(
            model=f"openai/{CHAT}",
            messages=[{"role": "user", "content": "count my tokens please"}],
            stream=True,
            stream_options={"include_usage": True},
            **lite(),
        )
    )
    real = real_usage()
    rebuilt = litellm.stream_chunk_builder(chunks)
    assert rebuilt.choices[0].message.content == "Echo: count my tokens please"
    assert (rebuilt.usage.prompt_tokens, rebuilt.usage.completion_tokens) == (
        real["prompt_tokens"],
        real["completion_tokens"],
    )


def test_litellm_tool_call_history_goes_back_as_litellm_returns_it():
    messages = [{"role": "user", "content": "Weather in Paris? [fake:tool]"}]
    first = litellm.completion(model=f"openai/{CHAT}", messages=messages, tools=[WEATHER_TOOL], **lite())
    call = first.choices[0].message.tool_calls[0]
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    # The message as LiteLLM returns it (with its provider_specific_fields), sent back as history.
    messages += [first.choices[0].message, {"role": "tool", "tool_call_id": call.id, "content": "18 C"}]
    messages.append({"role": "user", "content": "Thanks"})
    second = litellm.completion(model=f"openai/{CHAT}", messages=messages, tools=[WEATHER_TOOL], **lite())
    assert second.choices[0].message.content == "Echo: Thanks"


def test_litellm_embedding():
    answer = litellm.embedding(model=f"openai/{EMBEDDING}", input=["hello world"], **lite())
    assert len(answer.data[0]["embedding"]) == 1024
