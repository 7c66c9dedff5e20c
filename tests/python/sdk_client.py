#!/usr/bin/env python3
"""Call LLM APIs with the real ``anthropic`` and ``openai`` SDKs and log the
client's own timings.

Each ``--call KIND`` is one API call, made in the order given. For every
call one JSON line goes to ``--log`` with CLOCK_MONOTONIC nanoseconds:
``start_ns`` just before the SDK call, ``first_content_ns`` when the first
non-empty generated text arrived, and ``end_ns`` when the response was
consumed. For a non-streaming call, ``first_content_ns`` is when the SDK
returned. Errors the SDK raised are logged with their HTTP status and the
provider's error type, and the run goes on.

Kinds: ``anthropic-stream``, ``anthropic-whole``, ``anthropic-overloaded``
(the server responds with 529), ``anthropic-stream-error`` (the server sends an
``error`` event), ``openai-chat`` (non-streaming chat completion),
``openai-responses-stream``, ``openai-embeddings``, ``openai-rate-limited``
(the server responds with 429) and ``azure-chat`` (the ``AzureOpenAI`` client,
which sends its key in ``api-key``).

With ``--wait-stdin`` it prints ``waiting`` and reads one line from stdin
before the first call, so that a test can attach the probe first. The SDK
clients are built and their modules imported before that.
"""

import argparse
import json
import sys
import time

import anthropic
import openai

ANTHROPIC_MODEL = "claude-sonnet-4-5"
OPENAI_CHAT_MODEL = "gpt-4o-mini"
OPENAI_RESPONSES_MODEL = "o4-mini"
OPENAI_EMBEDDING_MODEL = "text-embedding-3-small"
AZURE_DEPLOYMENT = "gpt-4o-mini-prod"


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base-url", required=True, help="server root, for example http://127.0.0.1:8000")
    parser.add_argument("--call", action="append", required=True, help="kind of one API call (see above); repeat for more calls")
    parser.add_argument("--api-key", default="sk-llmslo-test", help="key sent by every client")
    parser.add_argument("--prompt-marker", default="", help="text added to every prompt")
    parser.add_argument("--log", required=True)
    parser.add_argument("--wait-stdin", action="store_true")
    return parser.parse_args(argv)


class Clients:
    def __init__(self, options):
        root = options.base_url.rstrip("/")
        self.anthropic = anthropic.Anthropic(base_url=root, api_key=options.api_key, max_retries=0)
        self.openai = openai.OpenAI(base_url=root + "/v1", api_key=options.api_key, max_retries=0)
        self.azure = openai.AzureOpenAI(
            azure_endpoint=root,
            azure_deployment=AZURE_DEPLOYMENT,
            api_version="2024-10-21",
            api_key=options.api_key,
            max_retries=0,
        )

    def close(self):
        self.anthropic.close()
        self.openai.close()
        self.azure.close()


def anthropic_stream(clients, prompt, record, scenario=None):
    extra = {"extra_headers": {"x-test-scenario": scenario}} if scenario else {}
    stream = clients.anthropic.messages.create(
        model=ANTHROPIC_MODEL,
        max_tokens=256,
        system=[{"type": "text", "text": "You answer briefly.", "cache_control": {"type": "ephemeral"}}],
        messages=[{"role": "user", "content": prompt}],
        stream=True,
        **extra,
    )
    for event in stream:
        if event.type == "message_start":
            record["model"] = event.message.model
            usage = event.message.usage
            record["input_tokens"] = usage.input_tokens + (usage.cache_read_input_tokens or 0)
            record["cached_tokens"] = usage.cache_read_input_tokens
        elif event.type == "content_block_delta" and event.delta.type == "text_delta" and event.delta.text:
            record.setdefault("first_content_ns", time.monotonic_ns())
        elif event.type == "message_delta":
            record["output_tokens"] = event.usage.output_tokens


def anthropic_whole(clients, prompt, record, scenario=None):
    extra = {"extra_headers": {"x-test-scenario": scenario}} if scenario else {}
    message = clients.anthropic.messages.create(
        model=ANTHROPIC_MODEL,
        max_tokens=256,
        messages=[{"role": "user", "content": prompt}],
        **extra,
    )
    record["first_content_ns"] = time.monotonic_ns()
    record["model"] = message.model
    record["input_tokens"] = message.usage.input_tokens
    record["output_tokens"] = message.usage.output_tokens


def openai_chat(client, model, prompt, record, extra_headers=None):
    completion = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": prompt}],
        extra_headers=extra_headers,
    )
    record["first_content_ns"] = time.monotonic_ns()
    record["model"] = completion.model
    record["input_tokens"] = completion.usage.prompt_tokens
    record["output_tokens"] = completion.usage.completion_tokens


def openai_responses_stream(clients, prompt, record):
    stream = clients.openai.responses.create(
        model=OPENAI_RESPONSES_MODEL,
        input=prompt,
        stream=True,
        extra_body={"prompt_cache_key": "llmslo-tests"},
    )
    for event in stream:
        if event.type == "response.output_text.delta" and event.delta:
            record.setdefault("first_content_ns", time.monotonic_ns())
        elif event.type == "response.completed":
            usage = event.response.usage
            record["model"] = event.response.model
            record["input_tokens"] = usage.input_tokens
            record["output_tokens"] = usage.output_tokens
            record["cached_tokens"] = usage.input_tokens_details.cached_tokens
            record["reasoning_tokens"] = usage.output_tokens_details.reasoning_tokens


def openai_embeddings(clients, prompt, record):
    # One input of 1536 dimensions keeps the base64 body near 8 KiB, within
    # what the probe captures of one read (16 KiB).
    response = clients.openai.embeddings.create(model=OPENAI_EMBEDDING_MODEL, input=[prompt])
    record["model"] = response.model
    record["input_tokens"] = response.usage.prompt_tokens
    record["vectors"] = len(response.data)
    record["dimensions"] = len(response.data[0].embedding)


def run_call(clients, kind, prompt, record):
    if kind == "anthropic-stream":
        anthropic_stream(clients, prompt, record)
    elif kind == "anthropic-stream-error":
        anthropic_stream(clients, prompt, record, scenario="stream-error")
    elif kind == "anthropic-whole":
        anthropic_whole(clients, prompt, record)
    elif kind == "anthropic-overloaded":
        anthropic_whole(clients, prompt, record, scenario="overloaded")
    elif kind == "openai-chat":
        openai_chat(clients.openai, OPENAI_CHAT_MODEL, prompt, record)
    elif kind == "openai-rate-limited":
        openai_chat(clients.openai, OPENAI_CHAT_MODEL, prompt, record, {"x-test-status": "429"})
    elif kind == "azure-chat":
        openai_chat(clients.azure, OPENAI_CHAT_MODEL, prompt, record)
    elif kind == "openai-responses-stream":
        openai_responses_stream(clients, prompt, record)
    elif kind == "openai-embeddings":
        openai_embeddings(clients, prompt, record)
    else:
        raise SystemExit(f"invalid --call {kind!r}: not a known kind; see --help for the kinds")


def error_type(body):
    """Return the provider's error code or type from an SDK error body."""
    if not isinstance(body, dict):
        return None
    error = body.get("error", body)
    if not isinstance(error, dict):
        return None
    return error.get("code") or error.get("type")


def main(argv):
    options = parse_args(argv)
    clients = Clients(options)
    if options.wait_stdin:
        print("waiting", flush=True)
        sys.stdin.readline()
    with open(options.log, "a", encoding="utf-8") as log:
        for index, kind in enumerate(options.call, start=1):
            prompt = f"Say something, request {index}. {options.prompt_marker}".strip()
            record = {"request": index, "call": kind, "start_ns": time.monotonic_ns()}
            try:
                run_call(clients, kind, prompt, record)
                record["status"] = 200
            except (anthropic.APIStatusError, openai.APIStatusError) as error:
                record["status"] = error.status_code
                record["error_type"] = error_type(error.body)
                record["retry_after"] = error.response.headers.get("retry-after")
            record["end_ns"] = time.monotonic_ns()
            log.write(json.dumps(record) + "\n")
            log.flush()
    clients.close()


if __name__ == "__main__":
    main(sys.argv[1:])
