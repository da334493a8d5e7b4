// Anthropic deployments: the official openai client talks OpenAI to switchyard, which speaks the
// Messages API to the fake upstream. Checked end to end: text, streams with and without usage,
// the .stream() helper with tools + finalChatCompletion(), tool results, images, stop, cached
// usage, versions, response_format, prompt caching, errors and fallback (429, 529 -> next
// target, 400 not retried), and the translated request as the upstream saw it (/_last). Every
// response and chunk is schema-checked. The fake itself is checked with @anthropic-ai/sdk.
// A stream that fails before any content (overloaded_error right after message_start, or a cut)
// is still a failure before the first byte: it falls back per the route, or answers with its
// status; an error after content ends the stream with an error event.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import Anthropic from '@anthropic-ai/sdk';
import {
  startFake, startProxy, makeConfig, assertCleanExit, streamRaw, post, request, chatBody,
  weatherTool, fakeDeployment,
} from './lib/harness.mjs';
import { routesDir, writeRoutes } from './fixtures/routing.mjs';
import {
  validateChatCompletion, validateChatChunk, validateCompletion, validateError, validateModelList,
} from './lib/schema.mjs';

const KEY_ENV = 'SY_IT_ANTHROPIC_KEY';
const KEY = 'sk-ant-deployment-secret-0123456789';

let fake;
let proxy;
let client;

/** An anthropic deployment on the fake. */
function anthDeployment(name, { directives = null, ...extra } = {}) {
  return {
    name,
    provider: 'anthropic',
    base_url: fake.base(directives),
    model: `claude-${name}`,
    api_key_env: KEY_ENV,
    price: { input: 3, cached_input: 0.3, cache_write: 3.75, output: 15 },
    ...extra,
  };
}

before(async () => {
  fake = await startFake();
  proxy = await startProxy(makeConfig({
    upstream: { retry_base_ms: 20, retry_max_ms: 2000, max_attempts: 3 },
    deployments: [
      anthDeployment('claude', { default_max_tokens: 321 }),
      anthDeployment('claude-new', { anthropic_version: '2026-10-21' }),
      anthDeployment('claude-cached', { directives: { cache_read: 100, cache_write: 20 } }),
      anthDeployment('claude-auto', { auto_cache_control: true }),
      anthDeployment('claude-429', { directives: { status: 429, retry_after: 0 } }),
      anthDeployment('claude-529', { directives: { status: 529 } }),
      anthDeployment('claude-400', { directives: { status: 400 } }),
      // used only by the aliases, so no earlier failure has opened their circuit breakers
      anthDeployment('claude-529-fb', { directives: { status: 529 } }),
      anthDeployment('claude-429-fb', { directives: { status: 429, retry_after: 0 } }),
      anthDeployment('claude-good'),
    ],
    aliases: {
      'overloaded-then-good': ['claude-529-fb', 'claude-good'],
      'limited-then-good': ['claude-429-fb', 'claude-good'],
      'bad-request-then-good': ['claude-400', 'claude-good'],
    },
  }), { env: { [KEY_ENV]: KEY } });
  client = proxy.client();
});

after(async () => {
  await assertCleanExit(proxy);
  await fake?.stop();
});

/** The last request the fake saw, with its parsed body. */
const last = () => fake.last();

/** Collects and validates every chunk of an SDK stream. */
async function collect(stream, what) {
  const chunks = [];
  for await (const c of stream) {
    validateChatChunk(c, `${what} chunk ${chunks.length}`);
    chunks.push(c);
  }
  return chunks;
}

/** A raw stream through the proxy: the data payloads, every chunk validated. */
async function rawChunks(body) {
  const r = await streamRaw(proxy.url, '/v1/chat/completions', body);
  assert.equal(r.status, 200, r.text);
  const data = r.events.map((e) => e.data);
  assert.equal(data[data.length - 1], '[DONE]', 'the stream ends with [DONE]');
  assert.equal(r.afterDone.trim(), '', 'nothing after [DONE]');
  const chunks = data.slice(0, -1).map((d, i) => validateChatChunk(JSON.parse(d), `chunk ${i}`));
  return { r, chunks };
}

test('non-stream text: an OpenAI answer; the upstream got a Messages request', async () => {
  const { data, response } = await client.chat.completions.create({
    model: 'claude',
    messages: [
      { role: 'system', content: 'Be brief.' },
      { role: 'developer', content: 'Answer in English.' },
      { role: 'user', content: 'hello anthropic' },
    ],
    temperature: 0.3,
    seed: 7,
  }).withResponse();
  validateChatCompletion(data);
  assert.equal(response.headers.get('x-switchyard-deployment'), 'claude');
  assert.equal(data.object, 'chat.completion');
  assert.equal(data.choices[0].message.content, 'Hello from fake! You said: hello anthropic');
  assert.equal(data.choices[0].finish_reason, 'stop');
  assert.equal(data.model, 'claude-claude');
  assert.ok(data.usage.prompt_tokens > 0 && data.usage.completion_tokens > 0);
  assert.equal(data.usage.total_tokens, data.usage.prompt_tokens + data.usage.completion_tokens);

  const l = await last();
  assert.match(l.path, /\/v1\/messages$/);
  assert.equal(l.headers['x-api-key'], KEY);
  assert.equal(l.headers['anthropic-version'], '2023-06-01');
  assert.equal(l.headers.authorization, undefined, 'no Authorization header upstream');
  assert.match(l.headers['content-type'], /^application\/json/);
  assert.equal(l.body.model, 'claude-claude');
  assert.equal(l.body.max_tokens, 321, 'the configured default_max_tokens');
  assert.deepEqual(l.body.system, [{ type: 'text', text: 'Be brief.' }, { type: 'text', text: 'Answer in English.' }]);
  assert.deepEqual(l.body.messages, [{ role: 'user', content: 'hello anthropic' }]);
  assert.equal(l.body.temperature, 0.3);
  assert.equal(l.body.seed, undefined);
  assert.equal(l.body.stream, undefined);
});

test('cached usage: prompt_tokens counts cache reads and writes; cached_tokens = reads', async () => {
  const data = await client.chat.completions.create(chatBody('claude-cached', 'cache me'));
  validateChatCompletion(data);
  const u = data.usage;
  assert.equal(u.prompt_tokens_details.cached_tokens, 100);
  assert.equal(u.prompt_tokens_details.cache_write_tokens, 20);
  assert.ok(u.prompt_tokens > 120, JSON.stringify(u));
  assert.equal(u.total_tokens, u.prompt_tokens + u.completion_tokens);
});

test('stream without include_usage: role first, content, finish_reason, [DONE]; no usage chunk', async () => {
  const { chunks } = await rawChunks(chatBody('claude', 'stream me [[fake thinking=1]]', { stream: true }));
  assert.equal(chunks[0].choices[0].delta.role, 'assistant');
  assert.ok(chunks.every((c) => c.usage === undefined || c.usage === null));
  const text = chunks.map((c) => c.choices[0]?.delta?.content ?? '').join('');
  assert.equal(text, 'Hello from fake! You said: stream me [[fake thinking=1]]'.slice(0, 'Hello from fake! You said: '.length + 40));
  assert.ok(!JSON.stringify(chunks).includes('Let me think'), 'thinking is not sent to the client');
  const fin = chunks.filter((c) => c.choices[0]?.finish_reason);
  assert.equal(fin.length, 1);
  assert.equal(fin[0].choices[0].finish_reason, 'stop');
  assert.ok(chunks.every((c) => c.id === chunks[0].id));
  assert.equal((await last()).body.stream, true);

  // the SDK sees the same
  const sdkChunks = await collect(await client.chat.completions.create(chatBody('claude', 'sdk stream', { stream: true })), 'sdk');
  assert.equal(sdkChunks.map((c) => c.choices[0]?.delta?.content ?? '').join(''), 'Hello from fake! You said: sdk stream');
});

test('stream with include_usage: one usage chunk last, with cached tokens', async () => {
  const { chunks } = await rawChunks(chatBody('claude-cached', 'usage please', {
    stream: true, stream_options: { include_usage: true },
  }));
  const withUsage = chunks.filter((c) => c.usage);
  assert.equal(withUsage.length, 1);
  const u = chunks[chunks.length - 1];
  assert.deepEqual(u.choices, []);
  assert.equal(u.usage.prompt_tokens_details.cached_tokens, 100);
  assert.equal(u.usage.prompt_tokens_details.cache_write_tokens, 20);
  assert.equal(u.usage.completion_tokens, 5);
  assert.equal(u.usage.total_tokens, u.usage.prompt_tokens + u.usage.completion_tokens);
});

test('.stream() helper with tools: finalChatCompletion() rebuilds the calls', async () => {
  const stream = client.chat.completions.stream({
    model: 'claude',
    messages: [{ role: 'user', content: 'Weather in Paris? [[fake tool_calls=2]]' }],
    tools: [weatherTool],
    tool_choice: 'required',
    parallel_tool_calls: false,
  });
  const chunks = [];
  stream.on('chunk', (c) => chunks.push(validateChatChunk(c, `helper chunk ${chunks.length}`)));
  const final = await stream.finalChatCompletion();
  const msg = final.choices[0].message;
  assert.equal(final.choices[0].finish_reason, 'tool_calls');
  assert.equal(msg.tool_calls.length, 2);
  for (const [i, tc] of msg.tool_calls.entries()) {
    assert.equal(tc.type, 'function');
    assert.equal(tc.function.name, 'get_weather');
    assert.deepEqual(JSON.parse(tc.function.arguments), { location: 'Paris', unit: 'c' });
    assert.match(tc.id, new RegExp(`^toolu_.*_${i}$`));
  }
  assert.notEqual(msg.tool_calls[0].id, msg.tool_calls[1].id);
  // the first delta of each call has id, type and name; later ones argument fragments only
  const deltas = chunks.flatMap((c) => c.choices[0]?.delta?.tool_calls ?? []);
  assert.ok(deltas.length >= 10);
  assert.ok(deltas.filter((d) => d.id).every((d) => d.function.name === 'get_weather' && d.type === 'function'));

  const l = await last();
  assert.deepEqual(l.body.tools, [{
    name: 'get_weather', description: 'Weather for a city', input_schema: weatherTool.function.parameters,
  }]);
  assert.deepEqual(l.body.tool_choice, { type: 'any', disable_parallel_tool_use: true });
});

test('non-stream tool calls: arguments are JSON strings', async () => {
  const data = await client.chat.completions.create({
    model: 'claude',
    messages: [{ role: 'user', content: 'Weather?' }],
    tools: [weatherTool],
    tool_choice: { type: 'function', function: { name: 'get_weather' } },
  });
  validateChatCompletion(data);
  const m = data.choices[0].message;
  assert.equal(m.content, null);
  assert.equal(typeof m.tool_calls[0].function.arguments, 'string');
  assert.deepEqual(JSON.parse(m.tool_calls[0].function.arguments), { location: 'Paris', unit: 'c' });
  assert.deepEqual((await last()).body.tool_choice, { type: 'tool', name: 'get_weather' });
});

test('tool results round trip: tool_use and tool_result blocks upstream, a text answer back', async () => {
  const messages = [
    { role: 'user', content: 'Weather in Paris?' },
    {
      role: 'assistant',
      content: null,
      tool_calls: [{ id: 'toolu_A', type: 'function', function: { name: 'get_weather', arguments: '{"location":"Paris"}' } }],
    },
    { role: 'tool', tool_call_id: 'toolu_A', content: '18C and sunny' },
  ];
  const data = await client.chat.completions.create({ model: 'claude', messages, tools: [weatherTool] });
  validateChatCompletion(data);
  assert.equal(data.choices[0].finish_reason, 'stop');
  assert.equal(data.choices[0].message.content, 'Hello from fake! You said: 18C and sunny');
  const l = await last();
  assert.deepEqual(l.body.messages, [
    { role: 'user', content: 'Weather in Paris?' },
    { role: 'assistant', content: [{ type: 'tool_use', id: 'toolu_A', name: 'get_weather', input: { location: 'Paris' } }] },
    { role: 'user', content: [{ type: 'tool_result', tool_use_id: 'toolu_A', content: [{ type: 'text', text: '18C and sunny' }] }] },
  ]);
  // streamed, the same
  const { chunks } = await rawChunks({ model: 'claude', messages, tools: [weatherTool], stream: true });
  assert.equal(chunks.map((c) => c.choices[0]?.delta?.content ?? '').join(''), 'Hello from fake! You said: 18C and sunny');
});

test('images: data URLs and https URLs become image blocks', async () => {
  const png = 'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==';
  const data = await client.chat.completions.create({
    model: 'claude',
    messages: [{
      role: 'user',
      content: [
        { type: 'text', text: 'Compare these' },
        { type: 'image_url', image_url: { url: `data:image/png;base64,${png}`, detail: 'low' } },
        { type: 'image_url', image_url: { url: 'https://example.com/cat.jpg' } },
      ],
    }],
  });
  validateChatCompletion(data);
  const c = (await last()).body.messages[0].content;
  assert.deepEqual(c, [
    { type: 'text', text: 'Compare these' },
    { type: 'image', source: { type: 'base64', media_type: 'image/png', data: png } },
    { type: 'image', source: { type: 'url', url: 'https://example.com/cat.jpg' } },
  ]);
  // an image the Messages API cannot take: a clear 400 from the proxy, the upstream never asked
  await fake.reset();
  const r = await post(proxy.url, '/v1/chat/completions', {
    model: 'claude',
    messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'http://example.com/x.png' } }] }],
  });
  assert.equal(r.status, 400, r.text);
  validateError(JSON.parse(r.text));
  assert.match(JSON.parse(r.text).error.message, /https/);
  assert.equal((await fake.stats()).messages, 0);
});

test('stop: stop_sequences upstream, finish_reason stop', async () => {
  const data = await client.chat.completions.create(chatBody('claude', 'cut me', { stop: ['said'] }));
  validateChatCompletion(data);
  assert.equal(data.choices[0].message.content, 'Hello from fake! You ');
  assert.equal(data.choices[0].finish_reason, 'stop');
  assert.deepEqual((await last()).body.stop_sequences, ['said']);
  const { chunks } = await rawChunks(chatBody('claude', 'cut me', { stop: 'said', stream: true }));
  assert.equal(chunks.map((c) => c.choices[0]?.delta?.content ?? '').join(''), 'Hello from fake! You ');
});

test('anthropic_version 2026-10-21: sampling parameters are dropped, the version header sent', async () => {
  // the fake rejects temperature/top_p/top_k under this version, as the real API does
  const data = await client.chat.completions.create(chatBody('claude-new', 'v2', { temperature: 0.7, top_p: 0.9, max_tokens: 50 }));
  validateChatCompletion(data);
  const l = await last();
  assert.equal(l.headers['anthropic-version'], '2026-10-21');
  assert.equal(l.body.temperature, undefined);
  assert.equal(l.body.top_p, undefined);
  assert.equal(l.body.max_tokens, 50);
});

test('response_format json_schema becomes output_config.format', async () => {
  const schema = { type: 'object', properties: { a: { type: 'integer' } }, required: ['a'], additionalProperties: false };
  const data = await client.chat.completions.create(chatBody('claude', 'json', {
    response_format: { type: 'json_schema', json_schema: { name: 'x', strict: true, schema } },
  }));
  validateChatCompletion(data);
  assert.deepEqual((await last()).body.output_config, { format: { type: 'json_schema', schema } });
});

test('prompt caching: client cache_control passes through; auto_cache_control marks long prefixes', async () => {
  await client.chat.completions.create({
    model: 'claude',
    messages: [
      { role: 'system', content: [{ type: 'text', text: 'A long document', cache_control: { type: 'ephemeral' } }] },
      { role: 'user', content: 'q' },
    ],
  });
  let l = await last();
  assert.deepEqual(l.body.system, [{ type: 'text', text: 'A long document', cache_control: { type: 'ephemeral' } }]);

  const longSystem = 'You are a careful assistant. '.repeat(200);
  const data = await client.chat.completions.create({
    model: 'claude-auto',
    messages: [
      { role: 'system', content: longSystem },
      { role: 'user', content: 'first' },
      { role: 'assistant', content: 'answer' },
      { role: 'user', content: 'second' },
    ],
    tools: [weatherTool],
    tool_choice: 'none',
  });
  validateChatCompletion(data);
  l = await last();
  assert.deepEqual(l.body.system, [{ type: 'text', text: longSystem, cache_control: { type: 'ephemeral' } }]);
  assert.deepEqual(l.body.tools[0].cache_control, { type: 'ephemeral' });
  assert.deepEqual(l.body.messages[1], { role: 'assistant', content: [{ type: 'text', text: 'answer', cache_control: { type: 'ephemeral' } }] });
  assert.deepEqual(l.body.messages[2], { role: 'user', content: 'second' });
  assert.deepEqual(l.body.tool_choice, { type: 'none' });
  // a short conversation on the same deployment: nothing to cache
  await client.chat.completions.create(chatBody('claude-auto', 'short'));
  assert.ok(!JSON.stringify((await last()).body).includes('cache_control'));
});

test('errors: 429 and 529 keep their status as OpenAI errors; 400 is not retried', async () => {
  let r = await post(proxy.url, '/v1/chat/completions', chatBody('claude-429'));
  assert.equal(r.status, 429, r.text);
  let e = validateError(JSON.parse(r.text)).error;
  assert.equal(e.type, 'rate_limit_error');
  assert.equal(e.code, 'rate_limit_exceeded');

  r = await post(proxy.url, '/v1/chat/completions', chatBody('claude-529'));
  assert.equal(r.status, 529, r.text);
  e = validateError(JSON.parse(r.text)).error;
  assert.equal(e.type, 'api_error');
  assert.equal(e.code, 'overloaded');
  assert.match(e.message, /fake error: status 529/);

  await fake.reset();
  r = await post(proxy.url, '/v1/chat/completions', chatBody('bad-request-then-good'));
  assert.equal(r.status, 400, r.text);
  e = validateError(JSON.parse(r.text)).error;
  assert.equal(e.type, 'invalid_request_error');
  assert.equal((await fake.stats()).messages, 1, 'a client error is not retried elsewhere');

  // the SDK surfaces them as its error classes
  await assert.rejects(client.chat.completions.create(chatBody('claude-429')), (err) => err.status === 429);
  await assert.rejects(client.chat.completions.create(chatBody('claude-529')), (err) => err.status === 529);
  assert.ok(!r.text.includes(KEY) && !proxy.stderr().includes(KEY), 'the key never leaks');
});

test('fallback: 529 overloaded and 429 move to the next target (non-stream and stream)', async () => {
  await fake.reset();
  const { data, response } = await client.chat.completions.create(chatBody('overloaded-then-good', 'fb')).withResponse();
  validateChatCompletion(data);
  assert.equal(response.headers.get('x-switchyard-deployment'), 'claude-good');
  assert.equal((await fake.stats()).messages, 2, 'one attempt on the overloaded target, one on the good one');

  await fake.reset();
  const { r } = await rawChunks(chatBody('overloaded-then-good', 'fb', { stream: true }));
  assert.equal(r.headers['x-switchyard-deployment'], 'claude-good');
  assert.equal((await fake.stats()).messages, 2, 'the stream too: one overloaded attempt, then the good one');

  await fake.reset();
  const { data: d2, response: r2 } = await client.chat.completions.create(chatBody('limited-then-good', 'fb')).withResponse();
  validateChatCompletion(d2);
  assert.equal(r2.headers.get('x-switchyard-deployment'), 'claude-good');
  assert.equal((await fake.stats()).messages, 2);
});

test('a mid-stream error event ends the stream with an OpenAI error event', async () => {
  const r = await streamRaw(proxy.url, '/v1/chat/completions', chatBody('claude', 'x [[fake error_after=2]]', { stream: true }));
  assert.equal(r.status, 200);
  const data = r.events.map((e) => e.data);
  assert.ok(!data.includes('[DONE]'));
  const lastEv = JSON.parse(data[data.length - 1]);
  validateError(lastEv);
  assert.equal(lastEv.error.code, 'overloaded');
  for (const d of data.slice(0, -1)) validateChatChunk(JSON.parse(d));
});

test('embeddings are a clear 400; legacy completions are translated', async () => {
  const r = await post(proxy.url, '/v1/embeddings', { model: 'claude', input: 'x' });
  assert.equal(r.status, 400, r.text);
  validateError(JSON.parse(r.text));
  assert.match(JSON.parse(r.text).error.message, /anthropic/i);

  const c = await client.completions.create({ model: 'claude', prompt: 'Say hi', max_tokens: 20 });
  validateCompletion(c);
  assert.equal(c.choices[0].text, 'Hello from fake! You said: Say hi');
  assert.equal((await last()).body.messages[0].content, 'Say hi');
});

test('/v1/models lists anthropic deployments', async () => {
  const r = await request(proxy.url, 'GET', '/v1/models');
  const list = validateModelList(JSON.parse(r.text));
  const m = list.data.find((x) => x.id === 'claude');
  assert.ok(m);
  assert.equal(m.owned_by, 'anthropic');
  const h = (await request(proxy.url, 'GET', '/healthz')).json();
  assert.equal(h.deployments.find((x) => x.name === 'claude').provider, 'anthropic');
});

test('the fake speaks Messages well enough for @anthropic-ai/sdk', async () => {
  const a = new Anthropic({ baseURL: fake.url, apiKey: 'sk-ant-direct', maxRetries: 0 });
  const tools = [{ name: 'get_weather', input_schema: { type: 'object', properties: { location: { type: 'string' } } } }];
  const msg = await a.messages.stream({
    model: 'claude-x',
    max_tokens: 100,
    messages: [{ role: 'user', content: 'Weather? [[fake tool_calls=2 thinking=1 cache_read=9 cache_write=4]]' }],
    tools,
  }).finalMessage();
  assert.equal(msg.role, 'assistant');
  assert.equal(msg.stop_reason, 'tool_use');
  assert.deepEqual(msg.content.map((b) => b.type), ['thinking', 'tool_use', 'tool_use']);
  assert.deepEqual(msg.content[1].input, { location: 'Paris', unit: 'c' });
  assert.equal(msg.usage.cache_read_input_tokens, 9);
  assert.equal(msg.usage.cache_creation_input_tokens, 4);
  assert.equal(msg.usage.output_tokens, 10);

  const text = await a.messages.stream({
    model: 'claude-x', max_tokens: 100, messages: [{ role: 'user', content: 'plain' }],
  }).finalMessage();
  assert.deepEqual(text.content, [{ type: 'text', text: 'Hello from fake! You said: plain' }]);
  assert.equal(text.stop_reason, 'end_turn');

  const json = await a.messages.create({ model: 'claude-x', max_tokens: 10, messages: [{ role: 'user', content: 'json' }] });
  assert.equal(json.content[0].text, 'Hello from fake! You said: json');

  await assert.rejects(
    a.messages.create({ model: 'claude-x', max_tokens: 10, messages: [{ role: 'user', content: 'x [[fake status=529]]' }] }),
    (err) => err.status === 529 && err.error?.error?.type === 'overloaded_error',
  );
  await assert.rejects(
    a.messages.stream({ model: 'claude-x', max_tokens: 10, messages: [{ role: 'user', content: 'x [[fake error_after=1]]' }] }).finalMessage(),
    /overloaded/i,
  );
  // the fake checks requests as the API does: a missing max_tokens is a 400
  await assert.rejects(
    a.messages.create({ model: 'claude-x', messages: [{ role: 'user', content: 'x' }] }),
    (err) => err.status === 400 && /max_tokens/.test(err.message),
  );
});

describe('a stream that fails before any content falls back like any failure before the first byte', () => {
  let fbFake;
  let fbProxy;
  let fbClient;

  before(async () => {
    fbFake = await startFake();
    const dep = (name, directives) => ({
      name, provider: 'anthropic', base_url: fbFake.base(directives), model: `claude-${name}`,
      api_key_env: KEY_ENV, price: { input: 3, output: 15 },
    });
    const dir = routesDir('anth-early');
    writeRoutes(dir, [
      // the anthropic deployment first, an openai-compatible one second, fallback on 529
      { name: 'early-fb', match: { model: 'early-fb' }, tiers: [{ name: 't', targets: ['anth-early', 'oa-good'] }],
        fallback: { on: ['connect', 529], max_attempts: 2 } },
      { name: 'cut-fb', match: { model: 'cut-fb' }, tiers: [{ name: 't', targets: ['anth-cut', 'oa-good'] }],
        fallback: { on: ['connect', 529], max_attempts: 2 } },
      // 529 is not in this route's list: the client gets the 529
      { name: 'early-nofb', match: { model: 'early-nofb' }, tiers: [{ name: 't', targets: ['anth-early-b', 'oa-good'] }],
        fallback: { on: [503], max_attempts: 2 } },
      { name: 'early-nofb-c', match: { model: 'early-nofb-c' }, tiers: [{ name: 't', targets: ['anth-early-c', 'oa-good'] }],
        fallback: { on: [503], max_attempts: 2 } },
      { name: 'late-fb', match: { model: 'late-fb' }, tiers: [{ name: 't', targets: ['anth-late', 'oa-good'] }],
        fallback: { on: ['connect', 529], max_attempts: 2 } },
      { name: 'direct', match: { model: '*' }, target: 'by_model_name' },
    ]);
    fbProxy = await startProxy(makeConfig({
      routes: dir,
      // two failures open a breaker: the fallback test sends two requests
      upstream: { retry_base_ms: 10, retry_max_ms: 200, breaker_failures: 2, breaker_cooldown_ms: 600000 },
      deployments: [
        dep('anth-early', { error_after: 0 }),
        dep('anth-early-b', { error_after: 0 }),
        dep('anth-early-c', { error_after: 0 }),
        dep('anth-cut', { drop_after: 0 }),
        dep('anth-late', { error_after: 2, chunks: 6 }),
        fakeDeployment(fbFake, 'oa-good', { model: 'fake-good' }),
      ],
    }), { env: { [KEY_ENV]: KEY } });
    fbClient = fbProxy.client();
  });

  after(async () => {
    await assertCleanExit(fbProxy);
    await fbFake?.stop();
  });

  const breakerOf = async (dep) => {
    const m = (await request(fbProxy.url, 'GET', '/metrics')).text
      .match(new RegExp(`^switchyard_breaker_state\\{deployment="${dep}",state="([a-z_]+)"\\} \\d+$`, 'm'));
    assert.ok(m, `no breaker line for ${dep}`);
    return m[1];
  };

  test('overloaded_error right after message_start: the next target serves a complete stream', async () => {
    await fbFake.reset();
    const { data: stream, response } = await fbClient.chat.completions
      .create(chatBody('early-fb', 'fall back please', { stream: true })).withResponse();
    assert.equal(response.status, 200);
    assert.equal(response.headers.get('x-switchyard-deployment'), 'oa-good');
    assert.equal(response.headers.get('x-switchyard-attempts'), '2', 'the failed anthropic attempt is counted');
    const chunks = await collect(stream, 'fallback');
    assert.equal(chunks[0].choices[0].delta.role, 'assistant');
    assert.equal(chunks.filter((c) => c.choices[0]?.delta?.role).length, 1, 'one role chunk: the first attempt\'s was never sent');
    assert.equal(chunks.map((c) => c.choices[0]?.delta?.content ?? '').join(''), 'Hello from fake! You said: fall back please');
    assert.equal(chunks.at(-1).choices[0].finish_reason, 'stop');
    assert.ok(chunks.every((c) => c.model === 'fake-good'), 'every chunk from the second target');
    const st = await fbFake.stats();
    assert.equal(st.messages, 1, 'one attempt on the anthropic deployment');
    assert.equal(st.chat, 1, 'one on the openai-compatible one');

    // the raw stream: status 200 only from the second target, ending with [DONE], no error event
    const r = await streamRaw(fbProxy.url, '/v1/chat/completions', chatBody('early-fb', 'raw', { stream: true }));
    assert.equal(r.status, 200, r.text);
    assert.equal(r.headers['x-switchyard-deployment'], 'oa-good');
    assert.equal(r.events.at(-1).data, '[DONE]');
    assert.ok(r.events.every((e) => !e.data.includes('"error"')), 'no error event reached the client');
    // the anthropic deployment's health saw both failures: its breaker is open
    assert.equal(await breakerOf('anth-early'), 'open');
    assert.match(fbProxy.stderr(), /attempt 1 on anth-early failed \(status=529\); retrying on oa-good/);
  });

  test('a cut right after message_start is a connect failure before the first byte: falls back', async () => {
    await fbFake.reset();
    const { data: stream, response } = await fbClient.chat.completions
      .create(chatBody('cut-fb', 'cut', { stream: true })).withResponse();
    assert.equal(response.headers.get('x-switchyard-deployment'), 'oa-good');
    assert.equal(response.headers.get('x-switchyard-attempts'), '2');
    const chunks = await collect(stream, 'cut');
    assert.equal(chunks.map((c) => c.choices[0]?.delta?.content ?? '').join(''), 'Hello from fake! You said: cut');
    assert.equal((await fbFake.stats()).messages, 1);
  });

  test('no fallback for 529: an OpenAI error with status 529, not a 200 stream', async () => {
    await fbFake.reset();
    const r = await post(fbProxy.url, '/v1/chat/completions', chatBody('early-nofb', 'x', { stream: true }));
    assert.equal(r.status, 529, r.text);
    assert.match(r.headers['content-type'], /^application\/json/);
    const e = validateError(JSON.parse(r.text));
    assert.equal(e.error.code, 'overloaded');
    assert.equal(e.error.type, 'api_error');
    assert.ok(!r.text.includes(KEY));
    assert.equal(r.headers['x-switchyard-deployment'], 'anth-early-b');
    const st = await fbFake.stats();
    assert.equal(st.messages, 1);
    assert.equal(st.chat, 0, 'the route does not fall back on 529');

    // the SDK gets its error class with the status, before any chunk
    await assert.rejects(
      fbClient.chat.completions.create(chatBody('early-nofb', 'sdk', { stream: true })),
      (err) => err.status === 529 && /overloaded/i.test(err.message),
    );
    // legacy completion streams (no role chunk) too; another deployment, as two failures
    // opened anth-early-b's breaker
    const c = await post(fbProxy.url, '/v1/completions', { model: 'early-nofb-c', prompt: 'x', stream: true });
    assert.equal(c.status, 529, c.text);
    validateError(JSON.parse(c.text));
  });

  test('an error after the first content delta still ends the stream with an error event', async () => {
    await fbFake.reset();
    const r = await streamRaw(fbProxy.url, '/v1/chat/completions', chatBody('late-fb', 'late', { stream: true }));
    assert.equal(r.status, 200);
    assert.equal(r.headers['x-switchyard-deployment'], 'anth-late');
    const data = r.events.map((e) => e.data);
    assert.ok(!data.includes('[DONE]'));
    const chunks = data.slice(0, -1).map((d, i) => validateChatChunk(JSON.parse(d), `late chunk ${i}`));
    assert.ok(chunks.some((c) => (c.choices[0]?.delta?.content ?? '') !== ''), 'content went out before the error');
    const lastEv = validateError(JSON.parse(data.at(-1)));
    assert.equal(lastEv.error.code, 'overloaded');
    const st = await fbFake.stats();
    assert.equal(st.messages, 1);
    assert.equal(st.chat, 0, 'no fallback after content reached the client');

    // the SDK: content first, then its APIError
    const got = [];
    await assert.rejects(async () => {
      for await (const c of await fbClient.chat.completions.create(chatBody('late-fb', 'sdk late', { stream: true }))) got.push(c);
    }, /overloaded/i);
    assert.ok(got.some((c) => (c.choices[0]?.delta?.content ?? '') !== ''));
  });
});
