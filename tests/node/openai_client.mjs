// The official openai npm package against arkq's gateway: one streamed and one non-streamed chat
// completion. Prints one JSON line with what it got, for tests/integration/test_node_client.py.
// Usage: node openai_client.mjs BASE_URL API_KEY MODEL
import OpenAI from "openai";

const [baseURL, apiKey, model] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0 });
const messages = [{ role: "user", content: "Hello from Node." }];

const { data: completion, response } = await client.chat.completions
  .create({ model, messages, max_tokens: 30 })
  .withResponse();

const stream = await client.chat.completions.create({
  model,
  messages,
  max_tokens: 30,
  stream: true,
  stream_options: { include_usage: true },
});
let streamed = "";
let finishReason = null;
let usage = null;
const ids = new Set();
for await (const chunk of stream) {
  ids.add(chunk.id);
  if (chunk.usage) usage = chunk.usage;
  for (const choice of chunk.choices) {
    streamed += choice.delta.content ?? "";
    finishReason = choice.finish_reason ?? finishReason;
  }
}

let refused = null;
try {
  await new OpenAI({ baseURL, apiKey: "sk-not-a-key", maxRetries: 0 }).models.list();
} catch (error) {
  refused = { status: error.status, code: error.code, isAuth: error instanceof OpenAI.AuthenticationError };
}

console.log(
  JSON.stringify({
    completion: {
      id: completion.id,
      jobId: response.headers.get("x-arkq-job-id"),
      content: completion.choices[0].message.content,
      finishReason: completion.choices[0].finish_reason,
      usage: completion.usage,
    },
    stream: { ids: [...ids], content: streamed, finishReason, usage },
    refused,
  }),
);
