// Sends streaming OpenAI chat completions with Node's built-in fetch over
// HTTPS and logs the client's own timings, in the format of
// tests/python/openai_client.py: one JSON line per request with
// CLOCK_MONOTONIC nanoseconds (process.hrtime) just before fetch
// (start_ns), at the first chunk with non-empty content (first_content_ns)
// and when the response was consumed (end_ns).
//
// Usage: node openai_stream.mjs --base-url URL --log FILE [--model M]
//        [--requests N]
// The CA comes from NODE_EXTRA_CA_CERTS. The script prints `waiting` and
// reads a line from stdin before the first request, so that a probe can
// attach first. Requests run one after another on fetch's keep-alive
// connection.

import { appendFileSync } from "node:fs";
import { once } from "node:events";
import { createInterface } from "node:readline";
import { parseArgs } from "node:util";

const { values: options } = parseArgs({
  options: {
    "base-url": { type: "string" },
    log: { type: "string" },
    model: { type: "string", default: "gpt-4o-mini" },
    requests: { type: "string", default: "1" },
  },
});
if (!options["base-url"] || !options.log) {
  console.error("openai_stream.mjs: --base-url and --log are required");
  process.exit(2);
}

const monotonicNs = () => Number(process.hrtime.bigint());

async function stream(index) {
  const record = { request: index, stream: true, start_ns: monotonicNs() };
  const response = await fetch(`${options["base-url"]}/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: "Bearer sk-llmslo-test" },
    body: JSON.stringify({
      model: options.model,
      stream: true,
      stream_options: { include_usage: true },
      messages: [{ role: "user", content: `Say something, request ${index}.` }],
    }),
  });
  if (response.status !== 200) {
    throw new Error(`request ${index}: HTTP ${response.status}`);
  }
  let contentEvents = 0;
  const decoder = new TextDecoder();
  let buffered = "";
  for await (const bytes of response.body) {
    buffered += decoder.decode(bytes, { stream: true });
    let end;
    while ((end = buffered.indexOf("\n")) >= 0) {
      const line = buffered.slice(0, end).trim();
      buffered = buffered.slice(end + 1);
      if (!line.startsWith("data: ") || line === "data: [DONE]") continue;
      const chunk = JSON.parse(line.slice(6));
      if (chunk.choices?.[0]?.delta?.content) {
        if (record.first_content_ns === undefined) record.first_content_ns = monotonicNs();
        contentEvents += 1;
      }
      if (chunk.usage) {
        record.completion_tokens = chunk.usage.completion_tokens;
        record.prompt_tokens = chunk.usage.prompt_tokens;
      }
      record.response_model = chunk.model;
    }
  }
  record.end_ns = monotonicNs();
  record.content_events = contentEvents;
  return record;
}

const input = createInterface({ input: process.stdin });
console.log("waiting");
await once(input, "line");
input.close();
const requests = Number(options.requests);
for (let index = 1; index <= requests; index += 1) {
  appendFileSync(options.log, JSON.stringify(await stream(index)) + "\n");
}
