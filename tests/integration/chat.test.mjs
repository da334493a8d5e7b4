// Chat and legacy completions through the proxy with the official openai client: non-stream,
// streams with and without usage, the .stream() helper with (parallel) tool calls, and
// upstreams whose bodies are Ollama- or vLLM-shaped. Every response and chunk is schema-checked.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startFake, startProxy, makeConfig, fakeDeployment, assertCleanExit, streamRaw, post, chatBody,
  weatherTool,
} from './lib/harness.mjs';
import { validateChatCompletion, validateChatChunk, validateCompletion } from './lib/schema.mjs';

const KEY_ENV = 'SY_IT_CHAT_KEY';
const KEY = 'sk-deployment-secret-chat';

let fake;
let proxy;
let client;

before(async () => {
  fake = await startFake();
  const cfg = makeConfig({
    deployments: [
      fakeDeployment(fake, 'fake-small', { api_key_env: KEY_ENV }),
      fakeDeployment(fake, 'keyless', { model: 'fake-keyless' }),
      fakeDeployment(fake, 'by-upstream-name', { model: 'upstream-model-x' }),
      fakeDeployment(fake, 'ollama-dep', { model: 'qwen-ollama', directives: { shape: 'ollama' } }),
      fakeDeployment(fake, 'vllm-dep', { model: 'llama-vllm', directives: { shape: 'vllm' } }),
    ],
  });
  proxy = await startProxy(cfg, { env: { [KEY_ENV]: KEY } });
  client = proxy.client();
});

after(async () => {
  await assertCleanExit(proxy);
  await fake?.stop();
});

/** Collects and validates every chunk of an SDK stream. */
async function collect(stream, what) {
  const chunks = [];
  for await (const c of stream) {
    validateChatChunk(c, `${what} chunk ${chunks.length}`);
    chunks.push(c);
  }
  return chunks;
}

function checkStreamProtocol(chunks, what) {
  assert.ok(chunks.length > 0, `${what}: no chunks`);
  const first = chunks.find((c) => c.choices.length > 0);
  assert.equal(first.choices[0].delta.role, 'assistant', `${what}: first chunk lacks delta.role`);
  assert.ok(chunks.some((c) => c.choices.some((ch) => ch.finish_reason)), `${what}: no chunk has finish_reason`);
  const ids = new Set(chunks.map((c) => c.id));
  assert.equal(ids.size, 1, `${what}: chunks carry different ids`);
  for (const c of chunks) {
    for (const ch of c.choices) {
      for (const tc of ch.delta.tool_calls || []) {
        assert.equal(typeof tc.index, 'number', `${what}: tool-call delta without index`);
      }
    }
  }
}

test('non-stream chat: schema, content, usage, headers, deployment key', async () => {
  await fake.reset();
  const { data, response } = await client.chat.completions
    .create({ model: 'fake-small', messages: [{ role: 'user', content: 'hello there' }] })
    .withResponse();
  validateChatCompletion(data, 'chat completion');
  assert.equal(data.object, 'chat.completion');
  assert.match(data.choices[0].message.content, /^Hello from fake! You said: hello there/);
  assert.equal(data.choices[0].message.role, 'assistant');
  assert.equal(data.choices[0].finish_reason, 'stop');
  assert.ok(data.usage && data.usage.total_tokens === data.usage.prompt_tokens + data.usage.completion_tokens);
  assert.ok(response.headers.get('x-request-id'), 'x-request-id');
  assert.equal(response.headers.get('x-switchyard-deployment'), 'fake-small');
  assert.ok(response.headers.get('x-switchyard-route'), 'x-switchyard-route');
  assert.match(response.headers.get('content-type') || '', /application\/json/);

  const last = await fake.last();
  assert.equal(last.method, 'POST');
  assert.match(last.path, /\/chat\/completions$/);
  assert.equal(last.headers.authorization, `Bearer ${KEY}`, 'upstream must see the deployment key');
  assert.equal(last.body.model, 'fake-small');
  assert.ok(!JSON.stringify(last.headers).includes('sk-client-key-must-not-leak'), 'client key forwarded upstream');
});

test('client Authorization is never forwarded to a keyless deployment', async () => {
  await fake.reset();
  const r = await client.chat.completions.create({ model: 'keyless', messages: [{ role: 'user', content: 'x' }] });
  validateChatCompletion(r);
  const last = await fake.last();
  assert.equal(last.headers.authorization, undefined, `upstream got Authorization: ${last.headers.authorization}`);
  assert.ok(!JSON.stringify(last).includes('sk-client-key-must-not-leak'));
  assert.equal(last.body.model, 'fake-keyless');
});

test('model selected by the deployment\'s upstream model name', async () => {
  await fake.reset();
  const { data, response } = await client.chat.completions
    .create({ model: 'upstream-model-x', messages: [{ role: 'user', content: 'hi' }] }).withResponse();
  validateChatCompletion(data);
  assert.equal(response.headers.get('x-switchyard-deployment'), 'by-upstream-name');
  assert.equal((await fake.last()).body.model, 'upstream-model-x');
});

test('x-request-id differs between requests', async () => {
  const a = await post(proxy.url, '/v1/chat/completions', chatBody('fake-small'));
  const b = await post(proxy.url, '/v1/chat/completions', chatBody('fake-small'));
  assert.equal(a.status, 200, a.text);
  assert.ok(a.headers['x-request-id'] && b.headers['x-request-id']);
  assert.notEqual(a.headers['x-request-id'], b.headers['x-request-id']);
});

test('stream with stream_options.include_usage: usage chunk last, every chunk valid', async () => {
  await fake.reset();
  const stream = await client.chat.completions.create({
    model: 'fake-small',
    messages: [{ role: 'user', content: 'stream please [[fake chunks=7]]' }],
    stream: true,
    stream_options: { include_usage: true },
  });
  const chunks = await collect(stream, 'usage stream');
  checkStreamProtocol(chunks, 'usage stream');
  const text = chunks.map((c) => c.choices[0]?.delta?.content || '').join('');
  assert.match(text, /Hello from fake! You said: stream please/);
  const usageChunks = chunks.filter((c) => c.usage);
  assert.equal(usageChunks.length, 1, 'exactly one chunk with usage');
  const u = usageChunks[0];
  assert.equal(u, chunks[chunks.length - 1], 'usage chunk is the last one');
  assert.deepEqual(u.choices, []);
  assert.equal(u.usage.completion_tokens, 7);
  assert.equal(u.usage.total_tokens, u.usage.prompt_tokens + u.usage.completion_tokens);
  const last = await fake.last();
  assert.equal(last.body.stream, true);
  assert.equal(last.body.stream_options?.include_usage, true);
});

test('stream without include_usage: upstream still asked for usage, client sees none', async () => {
  await fake.reset();
  const stream = await client.chat.completions.create({
    model: 'fake-small', messages: [{ role: 'user', content: 'no usage [[fake chunks=4]]' }], stream: true,
  });
  const chunks = await collect(stream, 'plain stream');
  checkStreamProtocol(chunks, 'plain stream');
  assert.ok(!chunks.some((c) => c.usage), 'client got a usage chunk it did not ask for');
  assert.ok(!chunks.some((c) => c.choices.length === 0), 'client got a choices:[] chunk');
  const last = await fake.last();
  assert.equal(last.body.stream_options?.include_usage, true, 'proxy must ask the upstream for usage');
});

test('raw SSE framing: event-stream, closes right after [DONE]', async () => {
  const r = await streamRaw(proxy.url, '/v1/chat/completions',
    chatBody('fake-small', 'raw [[fake chunks=3 interval_ms=5]]', { stream: true }));
  assert.equal(r.status, 200, r.text);
  assert.match(r.headers['content-type'], /^text\/event-stream/);
  assert.ok(r.headers['x-request-id']);
  assert.equal(r.headers['x-switchyard-deployment'], 'fake-small');
  assert.ok(r.doneAt !== null, 'no data: [DONE]');
  assert.equal(r.events[r.events.length - 1].data, '[DONE]');
  assert.equal(r.afterDone.trim(), '', 'bytes after [DONE]');
  assert.ok(r.endAt - r.doneAt < 1000, `response closed ${r.endAt - r.doneAt} ms after [DONE]`);
  for (const [i, e] of r.events.slice(0, -1).entries()) validateChatChunk(JSON.parse(e.data), `raw chunk ${i}`);
});

test('.stream() helper with a tool: finalChatCompletion() rebuilds the call', async () => {
  const seen = [];
  const stream = client.chat.completions.stream({
    model: 'fake-small',
    messages: [{ role: 'user', content: 'weather in Paris?' }],
    tools: [weatherTool],
  });
  stream.on('chunk', (c) => { validateChatChunk(c, `helper chunk ${seen.length}`); seen.push(c); });
  const final = await stream.finalChatCompletion();
  checkStreamProtocol(seen, 'tool stream');
  const msg = final.choices[0].message;
  assert.equal(final.choices[0].finish_reason, 'tool_calls');
  assert.equal(msg.tool_calls.length, 1);
  assert.equal(msg.tool_calls[0].type, 'function');
  assert.equal(msg.tool_calls[0].function.name, 'get_weather');
  assert.ok(msg.tool_calls[0].id);
  assert.deepEqual(JSON.parse(msg.tool_calls[0].function.arguments), { location: 'Paris', unit: 'c' });
});

test('parallel tool calls: non-stream and .stream()', async () => {
  const body = { model: 'fake-small', messages: [{ role: 'user', content: 'three [[fake tool_calls=3]]' }], tools: [weatherTool] };
  const r = await client.chat.completions.create(body);
  validateChatCompletion(r);
  assert.equal(r.choices[0].message.tool_calls.length, 3);
  assert.equal(r.choices[0].finish_reason, 'tool_calls');

  const seen = [];
  const stream = client.chat.completions.stream(body);
  stream.on('chunk', (c) => { validateChatChunk(c); seen.push(c); });
  const final = await stream.finalChatCompletion();
  checkStreamProtocol(seen, 'parallel tool stream');
  const calls = final.choices[0].message.tool_calls;
  assert.equal(calls.length, 3);
  assert.equal(new Set(calls.map((c) => c.id)).size, 3, 'tool call ids must differ');
  const indexes = new Set(seen.flatMap((c) => c.choices.flatMap((ch) => (ch.delta.tool_calls || []).map((t) => t.index))));
  assert.deepEqual([...indexes].sort(), [0, 1, 2]);
  for (const c of calls) assert.deepEqual(JSON.parse(c.function.arguments), { location: 'Paris', unit: 'c' });
});

test('ollama-shaped upstream: non-stream body gains refusal and logprobs', async () => {
  await fake.reset();
  const r = await post(proxy.url, '/v1/chat/completions', chatBody('ollama-dep', 'hi ollama'));
  assert.equal(r.status, 200, r.text);
  const j = r.json();
  validateChatCompletion(j, 'ollama-shaped');
  assert.ok('refusal' in j.choices[0].message, 'message.refusal missing');
  assert.equal(j.choices[0].message.refusal, null);
  assert.ok('logprobs' in j.choices[0], 'choice.logprobs missing');
  assert.equal(j.choices[0].logprobs, null);
  assert.equal((await fake.last()).body.model, 'qwen-ollama');
});

test('ollama-shaped upstream stream: role and tool-call indexes restored', async () => {
  const seen = [];
  const stream = client.chat.completions.stream({
    model: 'ollama-dep', messages: [{ role: 'user', content: 'two [[fake tool_calls=2]]' }], tools: [weatherTool],
  });
  stream.on('chunk', (c) => { validateChatChunk(c, 'ollama chunk'); seen.push(c); });
  const final = await stream.finalChatCompletion();
  checkStreamProtocol(seen, 'ollama tool stream');
  assert.equal(final.choices[0].message.tool_calls.length, 2);
  for (const c of final.choices[0].message.tool_calls) {
    assert.equal(c.function.name, 'get_weather');
    assert.deepEqual(JSON.parse(c.function.arguments), { location: 'Paris', unit: 'c' });
  }

  const plain = await client.chat.completions.create({
    model: 'ollama-dep', messages: [{ role: 'user', content: 'text' }], stream: true,
  });
  const chunks = await collect(plain, 'ollama text stream');
  checkStreamProtocol(chunks, 'ollama text stream');
});

test('vllm-shaped upstream: non-stream and stream validate', async () => {
  const r = await client.chat.completions.create({ model: 'vllm-dep', messages: [{ role: 'user', content: 'v' }] });
  validateChatCompletion(r, 'vllm-shaped');
  assert.equal(r.choices[0].message.refusal, null);
  const s = await client.chat.completions.create({
    model: 'vllm-dep', messages: [{ role: 'user', content: 'v' }], stream: true, stream_options: { include_usage: true },
  });
  const chunks = await collect(s, 'vllm stream');
  checkStreamProtocol(chunks, 'vllm stream');
  assert.ok(chunks[chunks.length - 1].usage);
});

test('long stream: 200 chunks arrive in order', async () => {
  const s = await client.chat.completions.create({
    model: 'fake-small', messages: [{ role: 'user', content: 'long [[fake chunks=200]]' }], stream: true,
  });
  const chunks = await collect(s, 'long stream');
  checkStreamProtocol(chunks, 'long stream');
  const content = chunks.filter((c) => c.choices[0]?.delta?.content).length;
  assert.equal(content, 200);
});

test('legacy /v1/completions: non-stream and stream', async () => {
  await fake.reset();
  const r = await client.completions.create({ model: 'fake-small', prompt: 'Say hi' });
  validateCompletion(r, 'completion');
  assert.equal(r.object, 'text_completion');
  assert.ok(typeof r.choices[0].text === 'string' && r.choices[0].text.length > 0);
  const last = await fake.last();
  assert.match(last.path, /\/completions$/);
  assert.doesNotMatch(last.path, /chat/);
  assert.equal(last.headers.authorization, `Bearer ${KEY}`);

  const s = await client.completions.create({ model: 'fake-small', prompt: 'Say hi', stream: true });
  let text = '';
  let finished = false;
  for await (const c of s) {
    assert.equal(c.object, 'text_completion');
    text += c.choices[0]?.text || '';
    if (c.choices[0]?.finish_reason) finished = true;
  }
  assert.ok(text.length > 0);
  assert.ok(finished, 'no finish_reason in completion stream');
});
