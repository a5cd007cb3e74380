#!/usr/bin/env python3
"""Drive an OpenAI/Anthropic-compatible endpoint with the OFFICIAL Python SDKs.

Runs, with the `openai` and `anthropic` packages and their default settings
(retries included):

  OpenAI     chat completion (plain, streamed with include_usage, tool call plain
             and streamed), responses (plain, streamed, tool call), embeddings,
             models list
  Anthropic  messages (plain, `messages.stream(...)`, `create(stream=True)`,
             tool use plain and streamed), count_tokens

and prints ONE JSON object on stdout:

  {"phase": "record", "http_requests": 15,
   "results": [{"name": "...", "text": "...", "id": "...", "events": 12}, ...]}

`text` is the answer's text (or the tool call's arguments, as JSON), `id` the
response id (null when the API has none), `events` the number of stream events
the SDK yielded (0 for non-streamed calls). Prompts are fixed, so a record run and
a replay run through a recording proxy must print the same ids and texts. Any SDK
exception or implausible answer exits 1 with a message on stderr.

--expect-miss makes ONE chat completion (unique prompt) that must fail with an
SDK APIStatusError (e.g. NotFoundError) after exactly one HTTP request (no SDK
retries), and prints {"miss": {"status": ..., "body": ..., "requests": 1, ...}}.

Usage:
  $AMAI_PYTHON tests/sdk/llm_sdks.py --openai-base-url http://127.0.0.1:PORT/v1 \\
      --anthropic-base-url http://127.0.0.1:PORT --key KEY [--phase record|replay]
  (--openai-key / --anthropic-key override --key per API.)

Requires the pinned SDKs: scripts/ensure-deps.sh python-sdks (venv python printed
by `scripts/ensure-deps.sh --print-python`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
import uuid
from typing import Any, Callable

try:
    import anthropic
    import openai
except ImportError as err:  # pragma: no cover - environment problem
    sys.exit(
        f"llm_sdks.py: cannot import the official SDKs ({err}); "
        "run scripts/ensure-deps.sh python-sdks and use the python it prints with --print-python"
    )

TIMEOUT_S = 60.0

WEATHER_TOOL_OPENAI = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "City name"}},
            "required": ["city"],
        },
    },
}
WEATHER_TOOL_RESPONSES = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather in a city",
    "parameters": WEATHER_TOOL_OPENAI["function"]["parameters"],
}
WEATHER_TOOL_ANTHROPIC = {
    "name": "get_weather",
    "description": "Current weather in a city",
    "input_schema": WEATHER_TOOL_OPENAI["function"]["parameters"],
}


class Failure(Exception):
    """An answer the SDK accepted but that is not plausible."""


def check(condition: bool, message: str) -> None:
    if not condition:
        raise Failure(message)


class RequestCounter:
    """Counts the HTTP requests the SDKs send (httpx request event hook)."""

    def __init__(self) -> None:
        self.count = 0
        self.paths: list[str] = []

    def __call__(self, request: Any) -> None:
        self.count += 1
        self.paths.append(f"{request.method} {request.url.path}")


def args_text(arguments: str) -> str:
    """Tool arguments as canonical JSON (sorted keys), checking they are JSON."""
    try:
        parsed = json.loads(arguments)
    except json.JSONDecodeError as err:
        raise Failure(f"tool arguments are not JSON: {arguments!r} ({err})") from err
    check(isinstance(parsed, dict), f"tool arguments are not an object: {arguments!r}")
    return json.dumps(parsed, sort_keys=True)


# ---------------------------------------------------------------- OpenAI calls


def openai_chat(client: openai.OpenAI, model: str) -> dict:
    r = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Say hello (chat)"}]
    )
    check(r.object == "chat.completion", f"object is {r.object!r}")
    check(r.choices[0].finish_reason == "stop", f"finish_reason {r.choices[0].finish_reason!r}")
    text = r.choices[0].message.content
    check(bool(text), "empty content")
    check(r.usage is not None and r.usage.total_tokens > 0, "no usage")
    return {"text": text, "id": r.id, "events": 0}


def openai_chat_stream(client: openai.OpenAI, model: str) -> dict:
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Say hello (chat stream)"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text, ids, events, usage, finish = "", set(), 0, None, None
    for chunk in stream:
        events += 1
        ids.add(chunk.id)
        check(chunk.object == "chat.completion.chunk", f"chunk object {chunk.object!r}")
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
    check(len(ids) == 1, f"chunks carry {len(ids)} ids: {ids}")
    check(bool(text), "no content deltas")
    check(finish == "stop", f"finish_reason {finish!r}")
    check(usage is not None and usage.total_tokens > 0, "no usage chunk despite include_usage")
    return {"text": text, "id": ids.pop(), "events": events}


def openai_chat_tools(client: openai.OpenAI, model: str) -> dict:
    r = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "What is the weather in Paris? (chat tools)"}],
        tools=[WEATHER_TOOL_OPENAI],
    )
    choice = r.choices[0]
    check(choice.finish_reason == "tool_calls", f"finish_reason {choice.finish_reason!r}")
    calls = choice.message.tool_calls or []
    check(len(calls) == 1, f"{len(calls)} tool calls")
    check(calls[0].function.name == "get_weather", f"tool {calls[0].function.name!r}")
    return {"text": args_text(calls[0].function.arguments), "id": r.id, "events": 0, "tool": calls[0].id}


def openai_chat_tools_stream(client: openai.OpenAI, model: str) -> dict:
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "What is the weather in Paris? (chat tools stream)"}],
        tools=[WEATHER_TOOL_OPENAI],
        stream=True,
    )
    ids, events, name, call_id, arguments, finish = set(), 0, None, None, "", None
    for chunk in stream:
        events += 1
        ids.add(chunk.id)
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            for call in choice.delta.tool_calls or []:
                check(call.index == 0, f"tool call index {call.index}")
                call_id = call.id or call_id
                if call.function is not None:
                    name = call.function.name or name
                    arguments += call.function.arguments or ""
    check(len(ids) == 1, f"chunks carry {len(ids)} ids: {ids}")
    check(finish == "tool_calls", f"finish_reason {finish!r}")
    check(name == "get_weather", f"tool {name!r}")
    return {"text": args_text(arguments), "id": ids.pop(), "events": events, "tool": call_id}


def openai_responses(client: openai.OpenAI, model: str) -> dict:
    r = client.responses.create(model=model, input="Say hello (responses)")
    check(r.object == "response" and r.status == "completed", f"{r.object!r} {r.status!r}")
    check(bool(r.output_text), "empty output_text")
    check(r.usage is not None and r.usage.total_tokens > 0, "no usage")
    return {"text": r.output_text, "id": r.id, "events": 0}


def openai_responses_stream(client: openai.OpenAI, model: str) -> dict:
    events, deltas, types = 0, "", []
    with client.responses.stream(model=model, input="Say hello (responses stream)") as stream:
        for event in stream:
            events += 1
            types.append(event.type)
            if event.type == "response.output_text.delta":
                deltas += event.delta
        final = stream.get_final_response()
    check(types[:1] == ["response.created"], f"first event {types[:1]}")
    check(types[-1:] == ["response.completed"], f"last event {types[-1:]}")
    check(final.output_text == deltas, f"deltas {deltas!r} != final {final.output_text!r}")
    check(bool(deltas), "no text deltas")
    check(final.usage is not None and final.usage.total_tokens > 0, "no usage")
    return {"text": final.output_text, "id": final.id, "events": events}


def openai_responses_tools(client: openai.OpenAI, model: str) -> dict:
    r = client.responses.create(
        model=model, input="What is the weather in Paris? (responses tools)", tools=[WEATHER_TOOL_RESPONSES]
    )
    calls = [item for item in r.output if item.type == "function_call"]
    check(len(calls) == 1, f"{len(calls)} function_call items in {[i.type for i in r.output]}")
    check(calls[0].name == "get_weather", f"tool {calls[0].name!r}")
    return {"text": args_text(calls[0].arguments), "id": r.id, "events": 0, "tool": calls[0].call_id}


def openai_embeddings(client: openai.OpenAI, model: str) -> dict:
    r = client.embeddings.create(model=model, input="Embed this sentence.")
    check(len(r.data) == 1, f"{len(r.data)} embeddings")
    vector = r.data[0].embedding
    check(len(vector) > 0 and all(isinstance(x, float) for x in vector[:8]), "not a float vector")
    return {"text": json.dumps([round(x, 6) for x in vector[:4]]), "id": None, "events": 0}


def openai_models(client: openai.OpenAI, _model: str) -> dict:
    ids = [m.id for m in client.models.list()]
    check(len(ids) > 0, "no models")
    return {"text": ",".join(ids), "id": None, "events": 0}


# ------------------------------------------------------------- Anthropic calls


def anthropic_text(message: Any) -> str:
    return "".join(block.text for block in message.content if block.type == "text")


def anthropic_tool(message: Any) -> Any:
    uses = [block for block in message.content if block.type == "tool_use"]
    check(len(uses) == 1, f"{len(uses)} tool_use blocks in {[b.type for b in message.content]}")
    check(uses[0].name == "get_weather", f"tool {uses[0].name!r}")
    return uses[0]


def anthropic_messages(client: anthropic.Anthropic, model: str) -> dict:
    m = client.messages.create(
        model=model, max_tokens=256, messages=[{"role": "user", "content": "Say hello (messages)"}]
    )
    check(m.type == "message" and m.role == "assistant", f"{m.type!r} {m.role!r}")
    check(m.stop_reason == "end_turn", f"stop_reason {m.stop_reason!r}")
    check(m.usage.input_tokens > 0 and m.usage.output_tokens > 0, "no usage")
    text = anthropic_text(m)
    check(bool(text), "empty text")
    return {"text": text, "id": m.id, "events": 0}


def anthropic_messages_stream(client: anthropic.Anthropic, model: str) -> dict:
    events, deltas = 0, ""
    with client.messages.stream(
        model=model, max_tokens=256, messages=[{"role": "user", "content": "Say hello (messages stream)"}]
    ) as stream:
        for event in stream:
            events += 1
            if event.type == "text":
                deltas += event.text
        final = stream.get_final_message()
    text = anthropic_text(final)
    check(text == deltas and bool(text), f"deltas {deltas!r} != final {text!r}")
    check(final.stop_reason == "end_turn", f"stop_reason {final.stop_reason!r}")
    check(final.usage.output_tokens > 1, "message_delta usage not applied")
    return {"text": text, "id": final.id, "events": events}


def anthropic_messages_create_stream(client: anthropic.Anthropic, model: str) -> dict:
    stream = client.messages.create(
        model=model,
        max_tokens=256,
        messages=[{"role": "user", "content": "Say hello (messages create stream)"}],
        stream=True,
    )
    events, text, msg_id, types = 0, "", None, []
    for event in stream:
        events += 1
        types.append(event.type)
        if event.type == "message_start":
            msg_id = event.message.id
        elif event.type == "content_block_delta" and event.delta.type == "text_delta":
            text += event.delta.text
    check(types[:1] == ["message_start"], f"first event {types[:1]}")
    check(types[-1:] == ["message_stop"], f"last event {types[-1:]}")
    check(bool(text), "no text deltas")
    return {"text": text, "id": msg_id, "events": events}


def anthropic_tools(client: anthropic.Anthropic, model: str) -> dict:
    m = client.messages.create(
        model=model,
        max_tokens=256,
        tools=[WEATHER_TOOL_ANTHROPIC],
        messages=[{"role": "user", "content": "What is the weather in Paris? (messages tools)"}],
    )
    check(m.stop_reason == "tool_use", f"stop_reason {m.stop_reason!r}")
    use = anthropic_tool(m)
    return {"text": json.dumps(use.input, sort_keys=True), "id": m.id, "events": 0, "tool": use.id}


def anthropic_tools_stream(client: anthropic.Anthropic, model: str) -> dict:
    events, partial = 0, ""
    with client.messages.stream(
        model=model,
        max_tokens=256,
        tools=[WEATHER_TOOL_ANTHROPIC],
        messages=[{"role": "user", "content": "What is the weather in Paris? (messages tools stream)"}],
    ) as stream:
        for event in stream:
            events += 1
            if event.type == "input_json":
                partial += event.partial_json
        final = stream.get_final_message()
    check(final.stop_reason == "tool_use", f"stop_reason {final.stop_reason!r}")
    use = anthropic_tool(final)
    check(args_text(partial) == json.dumps(use.input, sort_keys=True), f"partial_json {partial!r} != {use.input!r}")
    return {"text": json.dumps(use.input, sort_keys=True), "id": final.id, "events": events, "tool": use.id}


def anthropic_count_tokens(client: anthropic.Anthropic, model: str) -> dict:
    r = client.messages.count_tokens(
        model=model, messages=[{"role": "user", "content": "Count my tokens (count_tokens)"}]
    )
    check(r.input_tokens > 0, f"input_tokens {r.input_tokens}")
    return {"text": str(r.input_tokens), "id": None, "events": 0}


# ------------------------------------------------------------------------ main


def run_all(args: argparse.Namespace) -> dict:
    counter = RequestCounter()
    oa = openai.OpenAI(
        base_url=args.openai_base_url,
        api_key=args.openai_key or args.key,
        timeout=TIMEOUT_S,
        http_client=openai.DefaultHttpxClient(event_hooks={"request": [counter]}),
    )
    an = anthropic.Anthropic(
        base_url=args.anthropic_base_url,
        api_key=args.anthropic_key or args.key,
        timeout=TIMEOUT_S,
        http_client=anthropic.DefaultHttpxClient(event_hooks={"request": [counter]}),
    )
    calls: list[tuple[str, Callable[[Any, str], dict], Any, str]] = [
        ("openai.chat", openai_chat, oa, args.openai_model),
        ("openai.chat.stream", openai_chat_stream, oa, args.openai_model),
        ("openai.chat.tools", openai_chat_tools, oa, args.openai_model),
        ("openai.chat.tools.stream", openai_chat_tools_stream, oa, args.openai_model),
        ("openai.responses", openai_responses, oa, args.openai_model),
        ("openai.responses.stream", openai_responses_stream, oa, args.openai_model),
        ("openai.responses.tools", openai_responses_tools, oa, args.openai_model),
        ("openai.embeddings", openai_embeddings, oa, args.embedding_model),
        ("openai.models", openai_models, oa, ""),
        ("anthropic.messages", anthropic_messages, an, args.anthropic_model),
        ("anthropic.messages.stream", anthropic_messages_stream, an, args.anthropic_model),
        ("anthropic.messages.create_stream", anthropic_messages_create_stream, an, args.anthropic_model),
        ("anthropic.messages.tools", anthropic_tools, an, args.anthropic_model),
        ("anthropic.messages.tools.stream", anthropic_tools_stream, an, args.anthropic_model),
        ("anthropic.count_tokens", anthropic_count_tokens, an, args.anthropic_model),
    ]
    results = []
    for name, call, client, model in calls:
        if args.only and not any(name.startswith(prefix) for prefix in args.only):
            continue
        started = time.monotonic()
        try:
            result = call(client, model)
        except (openai.APIError, anthropic.APIError) as err:
            body = getattr(err, "body", None)
            status = getattr(err, "status_code", None)
            fail(f"{name} failed: {type(err).__module__}.{type(err).__name__} (status {status}): {err}; body={body!r}")
        except Failure as err:
            fail(f"{name} returned an implausible answer: {err}")
        except Exception as err:  # noqa: BLE001 - any SDK exception is a failure
            traceback.print_exc(file=sys.stderr)
            fail(f"{name} failed: {type(err).__module__}.{type(err).__name__}: {err}")
        result = {"name": name, **result}
        print(
            f"llm_sdks.py [{args.phase}] {name}: ok in {(time.monotonic() - started) * 1000:.0f} ms "
            f"id={result['id']} events={result['events']} text={result['text'][:60]!r}",
            file=sys.stderr,
        )
        results.append(result)
    oa.close()
    an.close()
    return {"phase": args.phase, "http_requests": counter.count, "results": results}


def expect_miss(args: argparse.Namespace) -> dict:
    counter = RequestCounter()
    client = openai.OpenAI(
        base_url=args.openai_base_url,
        api_key=args.openai_key or args.key,
        timeout=TIMEOUT_S,
        http_client=openai.DefaultHttpxClient(event_hooks={"request": [counter]}),
    )
    prompt = f"never recorded {uuid.uuid4()}"
    started = time.monotonic()
    try:
        r = client.chat.completions.create(
            model=args.miss_model, messages=[{"role": "user", "content": prompt}]
        )
    except openai.APIStatusError as err:
        elapsed_ms = (time.monotonic() - started) * 1000
        if counter.count != 1:
            fail(
                f"expected exactly one HTTP request for the miss, the SDK sent {counter.count} "
                f"({counter.paths}): the answer (status {err.status_code}) made it retry"
            )
        return {
            "miss": {
                "status": err.status_code,
                "error": type(err).__name__,
                "body": err.body,
                "requests": counter.count,
                "elapsed_ms": round(elapsed_ms),
            }
        }
    except openai.APIError as err:
        fail(f"expected an APIStatusError for the miss, got {type(err).__name__}: {err} after {counter.count} requests")
    fail(f"expected a miss, but got an answer: id={r.id} text={r.choices[0].message.content!r}")
    raise AssertionError("unreachable")


def fail(message: str) -> None:
    print(f"llm_sdks.py: FAILED: {message}", file=sys.stderr)
    sys.exit(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--openai-base-url", required=True, help="e.g. http://127.0.0.1:PORT/v1")
    parser.add_argument("--anthropic-base-url", required=True, help="e.g. http://127.0.0.1:PORT (no /v1)")
    parser.add_argument("--key", required=True, help="API key for both SDKs")
    parser.add_argument("--openai-key", help="OpenAI key (default: --key)")
    parser.add_argument("--anthropic-key", help="Anthropic key (default: --key)")
    parser.add_argument("--phase", choices=["record", "replay"], default="record", help="only labels the output")
    parser.add_argument("--openai-model", default="gpt-4o-mini")
    parser.add_argument("--embedding-model", default="text-embedding-3-small")
    parser.add_argument("--anthropic-model", default="claude-sonnet-4-5")
    parser.add_argument("--only", action="append", help="run only calls whose name starts with this (repeatable)")
    parser.add_argument("--expect-miss", action="store_true", help="one chat completion that must fail without retries")
    parser.add_argument(
        "--miss-model", default="fake-404", help="model for --expect-miss (fake-404 makes the fake upstream answer 404)"
    )
    args = parser.parse_args()
    print(
        f"llm_sdks.py [{args.phase}] openai {openai.__version__}, anthropic {anthropic.__version__}",
        file=sys.stderr,
    )
    output = expect_miss(args) if args.expect_miss else run_all(args)
    print(json.dumps(output))


if __name__ == "__main__":
    main()
