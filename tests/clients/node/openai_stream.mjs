// Sends streaming OpenAI chat completion requests with Node's built-in
// fetch over HTTPS and prints one JSON line per request with the client's
// own time to first content.
//
// Usage: node openai_stream.mjs BASE_URL MODEL REQUESTS
// The CA comes from NODE_EXTRA_CA_CERTS. The script waits for a line on
// stdin before the first request, so that a probe can attach first.

import { once } from "node:events";
import { createInterface } from "node:readline";

const [baseUrl, model, requestsText] = process.argv.slice(2);
const requests = Number(requestsText ?? "1");

async function stream() {
  const start = performance.now();
  const response = await fetch(`${baseUrl}/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: "Bearer test-key" },
    body: JSON.stringify({
      model,
      stream: true,
      stream_options: { include_usage: true },
      messages: [{ role: "user", content: "Say hello to the world" }],
    }),
  });
  const result = {
    status: response.status,
    client_ttft_us: 0,
    content_events: 0,
    completion_tokens: 0,
    done: false,
  };
  const decoder = new TextDecoder();
  let buffered = "";
  for await (const bytes of response.body) {
    buffered += decoder.decode(bytes, { stream: true });
    let end;
    while ((end = buffered.indexOf("\n")) >= 0) {
      const line = buffered.slice(0, end).trim();
      buffered = buffered.slice(end + 1);
      if (!line.startsWith("data: ")) continue;
      const data = line.slice(6);
      if (data === "[DONE]") {
        result.done = true;
        continue;
      }
      const chunk = JSON.parse(data);
      if (chunk.choices?.[0]?.delta?.content) {
        if (result.content_events === 0) {
          result.client_ttft_us = Math.round((performance.now() - start) * 1000);
        }
        result.content_events += 1;
      }
      if (chunk.usage) result.completion_tokens = chunk.usage.completion_tokens;
    }
  }
  return result;
}

const input = createInterface({ input: process.stdin });
await once(input, "line");
input.close();
for (let index = 0; index < requests; index += 1) {
  console.log(JSON.stringify(await stream()));
}
