#!/usr/bin/env python3
"""Send streaming chat completions with the ``openai`` SDK inside spans of the
real OpenTelemetry Python SDK, and send each request's trace context in its
``traceparent`` header.

``--span-mode per-call`` starts one CLIENT span per request and injects that
span's context, as an instrumented client does. ``--span-mode shared``
starts one span around all requests and injects the same context into
each, as a handler that wraps several calls in one span does.

For each request one JSON line goes to ``--log`` with the trace id and the
span id that the request's ``traceparent`` names (lowercase hex). With
``--otlp-endpoint URL`` the application's own spans are also exported there
over OTLP/HTTP, so that a receiver sees both sides.

With ``--wait-stdin`` it prints ``waiting`` and reads one line from stdin
before the first request, so that a test can attach the probe first.
"""

import argparse
import json
import sys

import openai
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--requests", type=int, default=1)
    parser.add_argument("--model", default="gpt-4o-mini")
    parser.add_argument("--span-mode", choices=["per-call", "shared"], default="per-call")
    parser.add_argument("--otlp-endpoint", help="OTLP/HTTP base URL for the application's spans")
    parser.add_argument("--log", required=True)
    parser.add_argument("--wait-stdin", action="store_true")
    return parser.parse_args(argv)


def tracer_provider(options):
    provider = TracerProvider(resource=Resource.create({"service.name": "traced-openai-client"}))
    if options.otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=options.otlp_endpoint.rstrip("/") + "/v1/traces")
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


def stream_chat(client, options, index, span):
    headers = {}
    TraceContextTextMapPropagator().inject(headers)
    context = span.get_span_context()
    record = {
        "request": index,
        "trace_id": format(context.trace_id, "032x"),
        "span_id": format(context.span_id, "016x"),
        "traceparent": headers["traceparent"],
    }
    stream = client.chat.completions.create(
        model=options.model,
        messages=[{"role": "user", "content": f"Say something, request {index}."}],
        stream=True,
        stream_options={"include_usage": True},
        extra_headers=headers,
    )
    for chunk in stream:
        if chunk.usage is not None:
            record["completion_tokens"] = chunk.usage.completion_tokens
            record["prompt_tokens"] = chunk.usage.prompt_tokens
        record["response_model"] = chunk.model
    return record


def main(argv):
    options = parse_args(argv)
    provider = tracer_provider(options)
    tracer = provider.get_tracer("llmslo-tests.traced-client")
    client = openai.OpenAI(base_url=options.base_url, api_key="sk-llmslo-test", max_retries=0)
    if options.wait_stdin:
        print("waiting", flush=True)
        sys.stdin.readline()

    records = []
    if options.span_mode == "per-call":
        for index in range(1, options.requests + 1):
            with tracer.start_as_current_span(f"chat {options.model}", kind=SpanKind.CLIENT) as span:
                records.append(stream_chat(client, options, index, span))
    else:
        with tracer.start_as_current_span("handle batch", kind=SpanKind.INTERNAL) as span:
            for index in range(1, options.requests + 1):
                records.append(stream_chat(client, options, index, span))

    with open(options.log, "a", encoding="utf-8") as log:
        for record in records:
            log.write(json.dumps(record) + "\n")
    client.close()
    provider.shutdown()


if __name__ == "__main__":
    main(sys.argv[1:])
