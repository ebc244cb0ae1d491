#!/usr/bin/env python3
"""Drives a running strut with the official `openai` Python SDK and checks
what comes back: chat, streaming chat with the usage chunk, completions,
logprobs, structured outputs (JSON schema, judged by the jsonschema
package), the Responses API, n choices, best_of, echo with prompt
logprobs, embeddings (float and the SDK's default base64), tool calls
and errors.

    strut serve models/smollm2 &
    strut serve models/minilm --port 8081 &
    strut serve models/smollm2-tools --port 8082 &
    python scripts/openai_sdk_check.py --chat-model smollm2-135m-instruct
    python scripts/openai_sdk_check.py --base-url http://127.0.0.1:8081/v1 \\
        --embedding-model all-minilm-l6-v2
    python scripts/openai_sdk_check.py --base-url http://127.0.0.1:8082/v1 \\
        --tools-model smollm2-135m-tools

Any Baseten-style base URL works too, e.g.
http://127.0.0.1:8080/environments/production/sync/v1. Needs `pip install
openai jsonschema`. Exits 1 when a check fails.
"""

import argparse
import math
import struct
import sys
import traceback

import openai

QUESTION = [
    # Without a system message SmolLM2's template adds its own default, under
    # which the 135M model drifts into French.
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is the capital of France?"},
]


class Failed(Exception):
    pass


def expect(condition, message):
    if not condition:
        raise Failed(message)


def check_models(client, names):
    listed = [m.id for m in client.models.list().data]
    for name in names:
        expect(name in listed, f"{name} not in /models: {listed}")
    return f"listed {listed}"


def check_chat(client, model):
    reply = client.chat.completions.create(
        model=model, messages=QUESTION, max_tokens=24, temperature=0
    )
    choice = reply.choices[0]
    text = choice.message.content
    expect(reply.id.startswith("chatcmpl-"), f"id {reply.id}")
    expect(choice.message.role == "assistant", f"role {choice.message.role}")
    expect("Paris" in text, f"no Paris in {text!r}")
    expect(choice.finish_reason in ("stop", "length"), choice.finish_reason)
    usage = reply.usage
    expect(usage.prompt_tokens > 0 and usage.completion_tokens > 0, f"usage {usage}")
    expect(usage.total_tokens == usage.prompt_tokens + usage.completion_tokens, f"{usage}")
    return text, usage


def check_chat_stream(client, model, greedy_text, greedy_usage):
    chunks = list(
        client.chat.completions.create(
            model=model,
            messages=QUESTION,
            max_tokens=24,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    expect(chunks[0].choices[0].delta.role == "assistant", "first chunk names the role")
    usage_chunks = [c for c in chunks if not c.choices]
    expect(len(usage_chunks) == 1, f"{len(usage_chunks)} usage chunks")
    expect(chunks[-1] is usage_chunks[0], "the usage chunk comes last")
    expect(chunks[-1].usage == greedy_usage, f"{chunks[-1].usage} != {greedy_usage}")
    expect(all(c.usage is None for c in chunks[:-1]), "usage is null before the end")
    expect(chunks[-2].choices[0].finish_reason is not None, "finish_reason before usage")
    text = "".join(c.choices[0].delta.content or "" for c in chunks[:-1])
    expect(text == greedy_text, f"streamed {text!r} != {greedy_text!r}")

    plain = list(
        client.chat.completions.create(
            model=model, messages=QUESTION, max_tokens=4, stream=True
        )
    )
    expect(all(c.choices and c.usage is None for c in plain), "no usage chunk unasked")
    return f"{len(chunks)} chunks, usage {chunks[-1].usage.completion_tokens} tokens"


def check_exact_length(client, model):
    reply = client.chat.completions.create(
        model=model,
        messages=QUESTION,
        max_tokens=16,
        temperature=0,
        extra_body={"ignore_eos": True},
    )
    expect(reply.usage.completion_tokens == 16, f"{reply.usage}")
    expect(reply.choices[0].finish_reason == "length", reply.choices[0].finish_reason)
    return "ignore_eos gives exactly max_tokens"


def check_completions(client, model):
    reply = client.completions.create(
        model=model, prompt="Once upon a time", max_tokens=8, temperature=0
    )
    text = reply.choices[0].text
    expect(reply.object == "text_completion" and text, f"{reply}")
    expect(reply.usage.completion_tokens > 0, f"{reply.usage}")
    chunks = list(
        client.completions.create(
            model=model,
            prompt="Once upon a time",
            max_tokens=8,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    streamed = "".join(c.choices[0].text for c in chunks if c.choices)
    expect(streamed == text, f"streamed {streamed!r} != {text!r}")
    expect(chunks[-1].usage == reply.usage, f"{chunks[-1].usage} != {reply.usage}")
    return repr(text)


def check_logprobs(client, model):
    """Each token's logprob <= 0, the alternatives best first with at most
    probability 1 between them, greedy picking the best, the tokens' bytes
    spelling the answer; streamed the same; completions' parallel lists."""
    reply = client.chat.completions.create(
        model=model, messages=QUESTION, max_tokens=16, temperature=0, logprobs=True, top_logprobs=5
    )
    content = reply.choices[0].logprobs.content
    expect(content, f"no logprobs in {reply}")
    spelled = b""
    for entry in content:
        tops = [t.logprob for t in entry.top_logprobs]
        expect(len(tops) == 5, f"{len(tops)} alternatives")
        expect(entry.logprob <= 0, f"logprob {entry.logprob}")
        expect(tops == sorted(tops, reverse=True), f"not best first: {tops}")
        expect(sum(math.exp(t) for t in tops) <= 1 + 1e-6, f"probabilities {tops}")
        expect(entry.top_logprobs[0].token == entry.token, f"greedy chose {entry.token!r}")
        spelled += bytes(entry.bytes)
    expect(spelled.decode() == reply.choices[0].message.content, f"{spelled!r}")
    chunks = client.chat.completions.create(
        model=model, messages=QUESTION, max_tokens=16, temperature=0, logprobs=True, top_logprobs=5,
        stream=True,
    )
    streamed = [e for c in chunks if c.choices and c.choices[0].logprobs for e in c.choices[0].logprobs.content]
    expect([(e.token, e.logprob) for e in streamed] == [(e.token, e.logprob) for e in content],
           "streamed logprobs differ")
    completion = client.completions.create(
        model=model, prompt="Once upon a time", max_tokens=8, temperature=0, logprobs=3
    )
    lp = completion.choices[0].logprobs
    expect("".join(lp.tokens) == completion.choices[0].text, f"{lp.tokens}")
    expect(len(lp.token_logprobs) == len(lp.tokens) == len(lp.text_offset), "parallel lists")
    return f"{len(content)} chat tokens, mean logprob {sum(e.logprob for e in content) / len(content):.3f}"


PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 20},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "color": {"enum": ["red", "green", "blue"]},
        "address": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 20},
                "zip": {"type": "string", "pattern": "^[0-9]{5}$"},
            },
            "required": ["city", "zip"],
            "additionalProperties": False,
        },
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 10}, "minItems": 1, "maxItems": 3},
    },
    "required": ["name", "age", "color", "address", "tags"],
    "additionalProperties": False,
}


def check_structured(client, model):
    """20 answers at temperature 1 under a schema with nested objects, enums
    and arrays: every one parses and validates (the jsonschema package, not
    strut, is the judge); streamed too; json_object gives an object."""
    import json

    import jsonschema

    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON, "strict": True}}
    ask = [{"role": "user", "content": "Describe a person as JSON."}]
    for i in range(20):
        reply = client.chat.completions.create(
            model=model, messages=ask, max_tokens=200, temperature=1.0, seed=i, response_format=fmt
        )
        text = reply.choices[0].message.content
        expect(reply.choices[0].finish_reason == "stop", f"answer {i} cut: {text!r}")
        jsonschema.validate(json.loads(text), PERSON)
    chunks = client.chat.completions.create(
        model=model, messages=ask, max_tokens=200, temperature=1.0, response_format=fmt, stream=True
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    jsonschema.validate(json.loads(streamed), PERSON)
    obj = client.chat.completions.create(
        model=model, messages=ask, max_tokens=120, temperature=0, response_format={"type": "json_object"}
    )
    # Any object: free-length strings can run into max_tokens, and a cut
    # document is only the start of an object.
    content = obj.choices[0].message.content
    if obj.choices[0].finish_reason == "stop":
        expect(isinstance(json.loads(content), dict), f"json_object gave {content!r}")
    else:
        expect(content.startswith("{"), f"json_object gave {content!r}")
    return f"20/20 valid at temperature 1, e.g. {text}"


def check_responses(client, model, greedy_text):
    """`client.responses.create`, not streamed and streamed: the same greedy
    answer as chat, events in the Responses API's order."""
    reply = client.responses.create(
        model=model, instructions=QUESTION[0]["content"], input=QUESTION[1]["content"],
        max_output_tokens=24, temperature=0,
    )
    expect(reply.status == "completed", f"status {reply.status}")
    expect(reply.output_text == greedy_text, f"{reply.output_text!r} != chat's {greedy_text!r}")
    expect(reply.usage.total_tokens == reply.usage.input_tokens + reply.usage.output_tokens, f"{reply.usage}")
    kinds, deltas, final = [], "", None
    for event in client.responses.create(
        model=model, instructions=QUESTION[0]["content"], input=QUESTION[1]["content"],
        max_output_tokens=24, temperature=0, stream=True,
    ):
        kinds.append(event.type)
        if event.type == "response.output_text.delta":
            deltas += event.delta
        if event.type == "response.completed":
            final = event.response
    expect(kinds[0] == "response.created" and kinds[-1] == "response.completed", f"events {kinds}")
    expect(deltas == greedy_text and final.output_text == greedy_text, f"streamed {deltas!r}")
    return f"{reply.output_text!r}, {len(kinds)} events streamed"


def check_choices(client, model):
    """n=3 at temperature 1: three choices in order, each its own sample."""
    reply = client.chat.completions.create(
        model=model, messages=QUESTION, max_tokens=12, temperature=1.0, seed=11, n=3
    )
    expect([c.index for c in reply.choices] == [0, 1, 2], f"indexes {[c.index for c in reply.choices]}")
    texts = [c.message.content for c in reply.choices]
    expect(all(texts) and len(set(texts)) > 1, f"choices {texts}")
    return f"{len(texts)} choices"


def check_scoring(client, model):
    """best_of picks among candidates; echo with logprobs scores the prompt."""
    prompt = "The capital of France is"
    best = client.completions.create(
        model=model, prompt=prompt, max_tokens=8, temperature=1.0, seed=3, best_of=3, n=1
    )
    expect(len(best.choices) == 1 and best.choices[0].text, f"best_of answered {best.choices}")
    scored = client.completions.create(
        model=model, prompt=prompt, max_tokens=1, temperature=0, echo=True, logprobs=1
    )
    choice = scored.choices[0]
    lp = choice.logprobs
    expect(choice.text.startswith(prompt), f"echo: {choice.text!r}")
    expect(len(lp.tokens) == scored.usage.prompt_tokens + 1, f"{len(lp.tokens)} tokens")
    expect(lp.token_logprobs[0] is None, "the first prompt token has no logprob")
    expect(all(v <= 0 for v in lp.token_logprobs[1:]), f"logprobs {lp.token_logprobs}")
    total = sum(lp.token_logprobs[1 : scored.usage.prompt_tokens])
    return f"best_of 3 -> 1; prompt log-likelihood {total:.2f} over {scored.usage.prompt_tokens - 1} tokens"


def check_errors(client, model):
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    try:
        client.chat.completions.create(model=model, messages=QUESTION, tools=tools)
        raise Failed("tools were accepted")
    except openai.BadRequestError as err:
        expect(err.code == "unsupported_parameter", f"code {err.code}")
        expect(err.param == "tools", f"param {err.param}")
    try:
        client.chat.completions.create(model="no-such-model", messages=QUESTION)
        raise Failed("an unknown model was accepted")
    except openai.NotFoundError as err:
        expect(err.code == "model_not_found", f"code {err.code}")
    return "400 for tools, 404 for an unknown model"


WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 40},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
    },
    "required": ["city", "unit", "days"],
    "additionalProperties": False,
}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "The weather forecast",
                                      "parameters": WEATHER}},
    {"type": "function", "function": {"name": "get_time", "description": "The local time",
                                      "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}},
]


def check_tools(client, model):
    """A named function and `required` at temperature 1: every answer is a
    call whose arguments validate against the function's schema; streamed,
    the SDK assembles the call from its deltas; the call and its result go
    back in the conversation."""
    import json

    import jsonschema

    ask = [{"role": "user", "content": "What will the weather be in Paris this week?"}]
    named = {"type": "function", "function": {"name": "get_weather"}}
    for i, choice in enumerate([named] * 5 + ["required"] * 5):
        reply = client.chat.completions.create(
            model=model, messages=ask, tools=TOOLS, tool_choice=choice, parallel_tool_calls=False,
            temperature=1.0, seed=i, max_tokens=120,
        )
        message = reply.choices[0].message
        expect(reply.choices[0].finish_reason == "tool_calls", f"answer {i}: {reply.choices[0]}")
        expect(len(message.tool_calls) == 1, f"answer {i}: {message.tool_calls}")
        call = message.tool_calls[0].function
        schema = WEATHER if call.name == "get_weather" else TOOLS[1]["function"]["parameters"]
        expect(choice == "required" or call.name == "get_weather", f"named get_weather, got {call.name}")
        jsonschema.validate(json.loads(call.arguments), schema)
    stream = client.chat.completions.create(
        model=model, messages=ask, tools=TOOLS, tool_choice=named, max_tokens=120, stream=True
    )
    deltas = [d for c in stream if c.choices for d in (c.choices[0].delta.tool_calls or [])]
    expect(len(deltas) == 1 and deltas[0].function.name == "get_weather", f"streamed {deltas}")
    jsonschema.validate(json.loads(deltas[0].function.arguments), WEATHER)
    followed = client.chat.completions.create(
        model=model, max_tokens=16, temperature=0, tools=TOOLS,
        messages=ask + [message, {"role": "tool", "tool_call_id": message.tool_calls[0].id, "content": "18 C"}],
    )
    expect(followed.choices[0].message.role == "assistant", f"{followed}")
    return f"10/10 valid calls at temperature 1, e.g. {call.name}({call.arguments})"


def as_f32(values):
    return [struct.unpack("<f", struct.pack("<f", v))[0] for v in values]


def check_embeddings(client, model):
    texts = ["The weather is lovely today.", "It's so sunny outside!"]
    floats = client.embeddings.create(model=model, input=texts, encoding_format="float")
    expect([d.index for d in floats.data] == [0, 1], "one vector per input, in order")
    expect(floats.usage.prompt_tokens > 0, f"usage {floats.usage}")
    vectors = [d.embedding for d in floats.data]
    for v in vectors:
        norm = math.sqrt(sum(x * x for x in v))
        expect(abs(norm - 1.0) < 1e-4, f"norm {norm}")
    # The SDK asks for base64 by default and decodes little-endian f32s.
    default = client.embeddings.create(model=model, input=texts)
    for a, b in zip(vectors, (d.embedding for d in default.data)):
        expect(as_f32(a) == as_f32(list(b)), "base64 carries the same f32s")
    return f"{len(vectors)} x {len(vectors[0])}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", default="http://127.0.0.1:8080/v1")
    parser.add_argument("--api-key", default="unused", help="sent as a Bearer token")
    parser.add_argument("--chat-model", help="checks chat and completions against it")
    parser.add_argument("--embedding-model", help="checks embeddings against it")
    parser.add_argument("--tools-model", help="checks tool calls against it (a template with tools)")
    args = parser.parse_args()
    if not (args.chat_model or args.embedding_model or args.tools_model):
        parser.error("name --chat-model, --embedding-model, --tools-model or several")

    client = openai.OpenAI(base_url=args.base_url, api_key=args.api_key, max_retries=0)
    print(f"openai {openai.__version__} against {args.base_url}")
    names = [n for n in (args.chat_model, args.embedding_model, args.tools_model) if n]
    checks = [("models", lambda: check_models(client, names))]
    if args.chat_model:
        model = args.chat_model
        greedy = {}

        def chat():
            greedy["text"], greedy["usage"] = check_chat(client, model)
            return repr(greedy["text"])

        checks += [
            ("chat", chat),
            ("chat stream", lambda: check_chat_stream(client, model, greedy["text"], greedy["usage"])),
            ("exact length", lambda: check_exact_length(client, model)),
            ("completions", lambda: check_completions(client, model)),
            ("logprobs", lambda: check_logprobs(client, model)),
            ("structured outputs", lambda: check_structured(client, model)),
            ("responses", lambda: check_responses(client, model, greedy["text"])),
            ("n choices", lambda: check_choices(client, model)),
            ("scoring", lambda: check_scoring(client, model)),
            ("errors", lambda: check_errors(client, model)),
        ]
    if args.embedding_model:
        checks.append(("embeddings", lambda: check_embeddings(client, args.embedding_model)))
    if args.tools_model:
        checks.append(("tools", lambda: check_tools(client, args.tools_model)))

    failed = 0
    for name, check in checks:
        try:
            print(f"ok    {name}: {check()}")
        except Exception as err:  # noqa: BLE001 - every failure is reported, then the next check runs
            failed += 1
            detail = str(err) if isinstance(err, Failed) else traceback.format_exc()
            print(f"FAIL  {name}: {detail}")
    print(f"{len(checks) - failed}/{len(checks)} checks passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
