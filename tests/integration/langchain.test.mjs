// LangChain JS (@langchain/openai + @langchain/core) as a real client: applications that only
// change their base URL. ChatOpenAI and OpenAIEmbeddings point at the proxy (configuration.baseURL)
// with the fake upstream behind it: invoke (content and token usage), stream() (chunks add up to
// the non-stream text; usage_metadata on the last chunk only when asked), bindTools (tool_calls
// with parsed args, non-stream and streamed, also from an Ollama-shaped upstream),
// withStructuredOutput (function calling parses the fake's tool call; the default json_schema
// method reaches the upstream intact), embeddings (the SDK's base64 default, float and explicit
// base64), routing of model "auto" (x-switchyard-* headers, seen through the fetch LangChain is
// given) and upstream/proxy errors as LangChain's errors. Every raw body the proxy answers
// LangChain is schema-checked.
import { test as nodeTest, before as nodeBefore, after as nodeAfter } from 'node:test';
import assert from 'node:assert/strict';
import { z } from 'zod';
import {
  startFake, startProxy, makeConfig, fakeDeployment, assertCleanExit, post, parseSSE,
} from './lib/harness.mjs';
import { validateChatCompletion, validateChatChunk, validateEmbeddings, validateError } from './lib/schema.mjs';
import { routesDir, writeRoutes } from './fixtures/routing.mjs';

// LangChain JS 1.x needs Node >= 20; Debian 12's own nodejs is 18. There the suite is skipped
// with this reason (the CI machine has Node 20 and runs it).
const NODE_MAJOR = Number(process.versions.node.split('.')[0]);
const skip = NODE_MAJOR < 20 ? `LangChain JS needs Node >= 20, this is ${process.versions.node}` : false;
const test = (name, fn) => nodeTest(name, { skip }, fn);
const before = (fn) => nodeBefore(skip ? async () => {} : fn);
const after = (fn) => nodeAfter(skip ? async () => {} : fn);
let ChatOpenAI, OpenAIEmbeddings, HumanMessage, SystemMessage, AIMessageChunk, tool;
if (!skip) {
  ({ ChatOpenAI, OpenAIEmbeddings } = await import('@langchain/openai'));
  ({ HumanMessage, SystemMessage, AIMessageChunk } = await import('@langchain/core/messages'));
  ({ tool } = await import('@langchain/core/tools'));
}

const GREETING = 'Hello from fake! You said: ';
const WEATHER_ARGS = { location: 'Paris', unit: 'c' };

// No network beyond loopback (CI has none): LangChain must not trace to LangSmith or fetch
// tiktoken encodings. Any other fetch is refused and recorded, and the suite fails on it.
for (const k of ['LANGSMITH_TRACING', 'LANGCHAIN_TRACING_V2', 'LANGSMITH_API_KEY', 'LANGCHAIN_API_KEY']) delete process.env[k];
const realFetch = globalThis.fetch;
const outsideFetches = [];
globalThis.fetch = (input, init) => {
  const u = new URL(input instanceof Request ? input.url : String(input));
  if (u.hostname !== '127.0.0.1' && u.hostname !== 'localhost') {
    outsideFetches.push(u.href);
    return Promise.reject(new Error(`langchain.test: no network in tests (${u.href})`));
  }
  return realFetch(input, init);
};

let fake;
let proxy;

/** Every exchange LangChain had with the proxy through the fetch it was given: the request
 *  body and the response's status, headers and raw text (the response is cloned, so LangChain
 *  reads its own copy untouched). */
let exchanges = [];
async function recordingFetch(url, init) {
  const res = await realFetch(url, init);
  const ex = {
    url: String(url),
    body: typeof init?.body === 'string' ? JSON.parse(init.body) : null,
    status: res.status,
    headers: res.headers,
    text: null,
  };
  exchanges.push(ex);
  ex.textPromise = res.clone().text().then((t) => { ex.text = t; return t; });
  return res;
}

/** The one exchange since the last reset, with its raw response text read to the end. */
async function onlyExchange(what) {
  assert.equal(exchanges.length, 1, `${what}: expected one request to the proxy, got ${exchanges.length}`);
  await exchanges[0].textPromise;
  return exchanges[0];
}

function chat(fields = {}) {
  return new ChatOpenAI({
    model: 'lc-chat',
    apiKey: 'sk-langchain-client-key',
    maxRetries: 0,
    timeout: 30000,
    configuration: { baseURL: `${proxy.url}/v1`, fetch: recordingFetch },
    ...fields,
  });
}

function embeddings(fields = {}) {
  return new OpenAIEmbeddings({
    model: 'lc-embed',
    apiKey: 'sk-langchain-client-key',
    maxRetries: 0,
    timeout: 30000,
    configuration: { baseURL: `${proxy.url}/v1`, fetch: recordingFetch },
    ...fields,
  });
}

/** Validates every data: event of a raw SSE text but [DONE]; returns the parsed chunks. */
function sseChunks(text, what) {
  const { events } = parseSSE(text);
  assert.ok(events.length > 0, `${what}: no SSE events`);
  assert.equal(events[events.length - 1].data, '[DONE]', `${what}: stream does not end with [DONE]`);
  return events.slice(0, -1).map((e, i) => {
    const c = JSON.parse(e.data);
    validateChatChunk(c, `${what} chunk ${i}`);
    return c;
  });
}

/** Collects a LangChain stream; returns the chunks and their concat(). */
async function drain(stream) {
  const chunks = [];
  for await (const c of stream) chunks.push(c);
  assert.ok(chunks.length > 0, 'LangChain stream yielded nothing');
  const merged = chunks.reduce((acc, c) => acc.concat(c));
  return { chunks, merged };
}

before(async () => {
  fake = await startFake();
  const dir = routesDir('lc-routes');
  writeRoutes(dir, [
    {
      name: 'auto',
      match: { model: 'auto' },
      rules: [{ when: { has_tools: true }, tier: 'flagship' }],
      tiers: [{ name: 'local', targets: ['lc-local'] }, { name: 'flagship', targets: ['lc-flagship'] }],
    },
    { name: 'direct', match: { model: '*' }, target: 'by_model_name' },
  ]);
  proxy = await startProxy(makeConfig({
    routes: dir,
    upstream: { retry_base_ms: 10, retry_max_ms: 200, breaker_failures: 1000 },
    deployments: [
      fakeDeployment(fake, 'lc-chat', { model: 'fake-small' }),
      fakeDeployment(fake, 'lc-local', { model: 'fake-local' }),
      fakeDeployment(fake, 'lc-flagship', { model: 'fake-large' }),
      fakeDeployment(fake, 'lc-embed', { model: 'fake-embed', directives: { dim: 24 } }),
      fakeDeployment(fake, 'lc-ollama', { model: 'qwen-ollama', directives: { shape: 'ollama' } }),
    ],
  }));
});

after(async () => {
  await assertCleanExit(proxy);
  await fake?.stop();
  assert.deepEqual(outsideFetches, [], 'LangChain fetched something off the machine');
});

test('invoke: the fake\'s greeting, token usage in usage_metadata and response_metadata', async () => {
  exchanges = [];
  await fake.reset();
  const msg = await chat().invoke([new SystemMessage('be brief'), new HumanMessage('hello langchain [[fake chunks=6]]')]);
  const ex = await onlyExchange('invoke');
  assert.equal(ex.status, 200, ex.text);
  const raw = JSON.parse(ex.text);
  validateChatCompletion(raw, 'invoke body');

  assert.equal(typeof msg.content, 'string');
  assert.ok(msg.content.startsWith(`${GREETING}hello langchain`), `content: ${msg.content}`);
  assert.equal(msg.content, raw.choices[0].message.content);
  const u = raw.usage;
  assert.equal(u.completion_tokens, 6, 'fake counts content chunks as completion tokens');
  assert.ok(u.prompt_tokens > 0);
  assert.equal(msg.usage_metadata.input_tokens, u.prompt_tokens);
  assert.equal(msg.usage_metadata.output_tokens, 6);
  assert.equal(msg.usage_metadata.total_tokens, u.prompt_tokens + 6);
  assert.deepEqual(msg.response_metadata.tokenUsage,
    { promptTokens: u.prompt_tokens, completionTokens: 6, totalTokens: u.prompt_tokens + 6 });
  assert.equal(msg.response_metadata.finish_reason, 'stop');
  assert.equal(msg.response_metadata.model_name, 'fake-small');
  assert.equal(msg.id, raw.id);

  // What the upstream saw: LangChain's messages, the deployment's model, never the client key.
  const last = await fake.last();
  assert.equal(last.body.model, 'fake-small');
  assert.deepEqual(last.body.messages.map((m) => m.role), ['system', 'user']);
  assert.ok(!JSON.stringify(last.headers).includes('sk-langchain-client-key'), 'client key forwarded upstream');
  assert.equal(ex.headers.get('x-switchyard-deployment'), 'lc-chat');
});

test('stream(): chunks add up to the invoke text; usage_metadata on the last chunk (streamUsage)', async () => {
  const prompt = 'stream it please [[fake chunks=9]]';
  exchanges = [];
  const whole = await chat().invoke(prompt);

  exchanges = [];
  await fake.reset();
  const { chunks, merged } = await drain(await chat({ streamUsage: true }).stream(prompt));
  const ex = await onlyExchange('stream');
  assert.equal(ex.body.stream, true);
  assert.equal(ex.body.stream_options?.include_usage, true, 'LangChain asked for usage');
  assert.match(ex.headers.get('content-type'), /^text\/event-stream/);
  const raw = sseChunks(ex.text, 'langchain usage stream');
  assert.ok(raw.length >= 9);

  for (const c of chunks) assert.ok(c instanceof AIMessageChunk);
  assert.equal(chunks.filter((c) => c.content).length, 9, 'one LangChain chunk per content piece');
  assert.equal(chunks.map((c) => c.content).join(''), whole.content);
  assert.equal(merged.content, whole.content);
  const withUsage = chunks.filter((c) => c.usage_metadata);
  assert.equal(withUsage.length, 1, 'exactly one chunk with usage_metadata');
  assert.equal(withUsage[0], chunks[chunks.length - 1], 'usage comes last');
  assert.equal(merged.usage_metadata.output_tokens, 9);
  assert.equal(merged.usage_metadata.input_tokens, raw[raw.length - 1].usage.prompt_tokens);
  assert.equal(merged.usage_metadata.total_tokens, merged.usage_metadata.input_tokens + 9);
  assert.equal(merged.response_metadata.finish_reason, 'stop');
  assert.equal((await fake.last()).body.stream_options?.include_usage, true);

  // streamUsage false: LangChain does not ask; the proxy still asks upstream and keeps it to itself.
  exchanges = [];
  await fake.reset();
  const plain = await drain(await chat({ streamUsage: false }).stream(prompt));
  const ex2 = await onlyExchange('stream without usage');
  assert.equal(ex2.body.stream_options, undefined, 'LangChain sent stream_options');
  const raw2 = sseChunks(ex2.text, 'langchain plain stream');
  assert.ok(!raw2.some((c) => c.usage), 'client got usage it did not ask for');
  assert.equal(plain.merged.content, whole.content);
  assert.equal(plain.merged.usage_metadata, undefined);
  assert.equal((await fake.last()).body.stream_options?.include_usage, true, 'proxy must ask the upstream for usage');
});

const weather = tool(async ({ location }) => `sunny in ${location}`, {
  name: 'get_weather',
  description: 'Weather for a city',
  schema: z.object({ location: z.string(), unit: z.enum(['c', 'f']).optional() }),
});

const lookupJsonSchema = {
  type: 'function',
  function: {
    name: 'lookup',
    description: 'Looks a city up',
    parameters: { type: 'object', properties: { location: { type: 'string' }, unit: { type: 'string' } }, required: ['location'] },
  },
};

test('bindTools (zod tool): tool_calls with name and parsed args, non-stream', async () => {
  exchanges = [];
  await fake.reset();
  const msg = await chat().bindTools([weather]).invoke('weather in Paris? [[fake tool_calls=2]]');
  const ex = await onlyExchange('tools');
  validateChatCompletion(JSON.parse(ex.text), 'tool-call body');
  assert.equal(ex.body.tools[0].function.name, 'get_weather');
  assert.equal(ex.body.tools[0].function.parameters.properties.location.type, 'string');
  assert.equal(msg.tool_calls.length, 2);
  msg.tool_calls.forEach((tc, i) => {
    assert.equal(tc.name, 'get_weather');
    assert.deepEqual(tc.args, WEATHER_ARGS);
    assert.match(tc.id, new RegExp(`^call_fake\\d+_${i}$`));
  });
  assert.equal(msg.invalid_tool_calls.length, 0);
  assert.equal(msg.response_metadata.finish_reason, 'tool_calls');
  assert.deepEqual((await fake.last()).body.tools.map((t) => t.function.name), ['get_weather']);

  // The tool result goes back through the proxy as a tool message; the model then answers text.
  exchanges = [];
  const result = await weather.invoke(msg.tool_calls[0]);
  const followUp = await chat().bindTools([weather]).invoke(
    [new HumanMessage('weather in Paris?'), msg, result,
      { role: 'tool', content: 'x', tool_call_id: msg.tool_calls[1].id }],
    { tool_choice: 'none' });
  assert.ok(followUp.content.startsWith(GREETING), followUp.content);
  assert.equal(followUp.tool_calls.length, 0);
  const sent = (await onlyExchange('tool follow-up')).body.messages;
  assert.deepEqual(sent.map((m) => m.role), ['user', 'assistant', 'tool', 'tool']);
  assert.equal(sent[2].tool_call_id, msg.tool_calls[0].id);
  assert.equal(sent[2].content, 'sunny in Paris');
});

test('bindTools (JSON-schema tool): streamed tool_call_chunks concatenate to the calls', async () => {
  exchanges = [];
  const { chunks, merged } = await drain(await chat().bindTools([lookupJsonSchema], { tool_choice: 'lookup' })
    .stream('look up two cities [[fake tool_calls=2]]'));
  const ex = await onlyExchange('tool stream');
  assert.deepEqual(ex.body.tool_choice, { type: 'function', function: { name: 'lookup' } });
  const raw = sseChunks(ex.text, 'tool stream');
  const rawIds = raw.flatMap((c) => c.choices.flatMap((ch) => (ch.delta.tool_calls || []).filter((t) => t.id).map((t) => t.id)));
  assert.equal(rawIds.length, 2);

  const fragments = chunks.flatMap((c) => c.tool_call_chunks || []);
  assert.equal(fragments.length, 10, 'five deltas per call');
  for (const idx of [0, 1]) {
    const args = fragments.filter((f) => f.index === idx).map((f) => f.args || '').join('');
    assert.deepEqual(JSON.parse(args), WEATHER_ARGS, `call ${idx} arguments`);
  }
  assert.equal(merged.tool_calls.length, 2);
  merged.tool_calls.forEach((tc, i) => {
    assert.equal(tc.name, 'lookup');
    assert.deepEqual(tc.args, WEATHER_ARGS);
    assert.equal(tc.id, rawIds[i]);
  });
  assert.equal(merged.invalid_tool_calls.length, 0);
  assert.equal(merged.response_metadata.finish_reason, 'tool_calls');
  assert.equal(merged.usage_metadata.output_tokens, 10, 'usage: 5 deltas x 2 calls');
});

test('ollama-shaped upstream: LangChain still gets two separate streamed calls', async () => {
  // Ollama omits the tool-call delta index (and the first chunk's role); LangChain merges
  // tool_call_chunks by index, so without the proxy restoring it the two calls would run together.
  exchanges = [];
  const { chunks, merged } = await drain(await chat({ model: 'lc-ollama' }).bindTools([weather])
    .stream('two calls [[fake tool_calls=2]]'));
  const raw = sseChunks((await onlyExchange('ollama tool stream')).text, 'ollama tool stream');
  const deltas = raw.flatMap((c) => c.choices.flatMap((ch) => ch.delta.tool_calls || []));
  assert.ok(deltas.every((t) => typeof t.index === 'number'), 'tool-call delta without index');
  assert.deepEqual(new Set(chunks.flatMap((c) => (c.tool_call_chunks || []).map((t) => t.index))), new Set([0, 1]));
  assert.equal(merged.tool_calls.length, 2);
  for (const tc of merged.tool_calls) {
    assert.equal(tc.name, 'get_weather');
    assert.deepEqual(tc.args, WEATHER_ARGS);
  }
  assert.notEqual(merged.tool_calls[0].id, merged.tool_calls[1].id);
  assert.equal(merged.invalid_tool_calls.length, 0);
  assert.equal((await fake.last()).body.model, 'qwen-ollama');
});

test('withStructuredOutput, functionCalling: the parsed object, non-stream and streamed', async () => {
  const schema = z.object({ location: z.string().describe('a city'), unit: z.enum(['c', 'f']) });
  exchanges = [];
  const structured = chat().withStructuredOutput(schema, { name: 'city', method: 'functionCalling' });
  const obj = await structured.invoke('where is it?');
  assert.deepEqual(obj, WEATHER_ARGS);
  const ex = await onlyExchange('structured');
  assert.deepEqual(ex.body.tool_choice, { type: 'function', function: { name: 'city' } });
  assert.equal(ex.body.tools[0].function.name, 'city');
  assert.deepEqual(ex.body.tools[0].function.parameters.required.sort(), ['location', 'unit']);

  // includeRaw: the AIMessage next to the parsed object.
  const both = await chat().withStructuredOutput(schema, { name: 'city', method: 'functionCalling', includeRaw: true })
    .invoke('where?');
  assert.deepEqual(both.parsed, WEATHER_ARGS);
  assert.equal(both.raw.tool_calls[0].name, 'city');

  // Streamed: the last partial object is the whole one.
  let lastPartial;
  for await (const p of await structured.stream('where, streamed?')) lastPartial = p;
  assert.deepEqual(lastPartial, WEATHER_ARGS);
});

test('withStructuredOutput, default method (json_schema): response_format reaches the upstream intact', async () => {
  // The fake has no directive to answer JSON content (it always answers its greeting), so the
  // parse of the content must fail; what is checked is that the request LangChain built went
  // through unchanged and that the content LangChain tried to parse is the upstream's.
  const schema = z.object({ city: z.string(), days: z.number().int() });
  exchanges = [];
  await fake.reset();
  await assert.rejects(chat().withStructuredOutput(schema, { name: 'forecast' }).invoke('plan a trip'),
    (e) => {
      // The openai SDK's parse() JSON.parses the content: the fake's greeting, as the proxy relayed it.
      assert.ok(e instanceof SyntaxError, `expected the JSON parse error, got ${e.name} ${e.status} ${e.message}`);
      assert.match(e.message, /"Hello from/);
      return true;
    });
  const ex = await onlyExchange('json_schema');
  assert.equal(ex.status, 200, ex.text);
  const raw = JSON.parse(ex.text);
  validateChatCompletion(raw, 'json_schema body');
  assert.ok(raw.choices[0].message.content.startsWith(`${GREETING}plan a trip`));
  const rf = (await fake.last()).body.response_format;
  assert.equal(rf.type, 'json_schema');
  assert.equal(rf.json_schema.name, 'forecast');
  assert.equal(rf.json_schema.strict, true);
  assert.deepEqual(rf.json_schema.schema.required.sort(), ['city', 'days']);
  assert.equal(rf.json_schema.schema.properties.days.type, 'integer');
  assert.deepEqual(ex.body.response_format, rf, 'the proxy changed response_format');
});

/** A base64 string of float32 little-endian values -> numbers. */
function decodeFloat32(s) {
  assert.equal(typeof s, 'string', 'expected a base64 string');
  const b = Buffer.from(s, 'base64');
  assert.equal(b.length % 4, 0, 'base64 embedding is not a whole number of float32');
  const out = [];
  for (let i = 0; i < b.length; i += 4) out.push(b.readFloatLE(i));
  return out;
}

test('OpenAIEmbeddings: the SDK default (base64), float and explicit base64 give the fake\'s vectors', async () => {
  const docs = ['first document', 'second\ndocument', 'third'];
  // What the fake answers directly (floats, dim=24 as the deployment's path directive), for the
  // inputs LangChain sends (it replaces newlines with spaces).
  const direct = await post(fake.url, '/_f/dim=24/v1/embeddings',
    { model: 'fake-embed', input: docs.map((d) => d.replace(/\n/g, ' ')), encoding_format: 'float' });
  assert.equal(direct.status, 200, direct.text);
  const expected = direct.json().data.map((d) => d.embedding);
  assert.equal(expected[0].length, 24);

  for (const encodingFormat of [undefined, 'float', 'base64']) {
    const what = `encodingFormat=${encodingFormat}`;
    exchanges = [];
    await fake.reset();
    const vecs = await embeddings(encodingFormat ? { encodingFormat } : {}).embedDocuments(docs);
    const ex = await onlyExchange(what);
    assert.equal(ex.status, 200, ex.text);
    const raw = JSON.parse(ex.text);
    const wantBase64 = encodingFormat !== 'float';
    assert.equal(ex.body.encoding_format, encodingFormat ?? 'base64', `${what}: the format the SDK asked`);
    assert.equal(typeof raw.data[0].embedding, wantBase64 ? 'string' : 'object', `${what}: answer format`);
    if (!wantBase64) validateEmbeddings(raw, what);
    // The upstream is asked in its default (floats); the proxy encodes base64 itself.
    assert.equal((await fake.last()).body.encoding_format, undefined, `${what}: encoding_format sent upstream`);
    assert.equal(ex.headers.get('x-switchyard-deployment'), 'lc-embed');

    // An explicit encodingFormat 'base64' makes the openai SDK hand back the base64 strings
    // undecoded, and LangChain returns them as they are: decode them here.
    const vector = (v) => (encodingFormat === 'base64' ? decodeFloat32(v) : Array.from(v));
    assert.equal(vecs.length, 3, what);
    vecs.forEach((v, i) => {
      assert.equal(vector(v).length, 24, `${what}: dimension`);
      assert.deepEqual(vector(v), expected[i].map(Math.fround), `${what}: vector ${i}`);
    });
    exchanges = [];
    const q = await embeddings(encodingFormat ? { encodingFormat } : {}).embedQuery(docs[0]);
    assert.deepEqual(vector(q), expected[0].map(Math.fround), `${what}: embedQuery`);
    assert.equal((await onlyExchange(`${what} embedQuery`)).body.input, docs[0]);
  }
});

test('model "auto" through LangChain: routed by the rules, x-switchyard-* headers', async () => {
  exchanges = [];
  await fake.reset();
  const plain = await chat({ model: 'auto' }).invoke('a simple question');
  assert.ok(plain.content.startsWith(GREETING));
  let ex = await onlyExchange('auto plain');
  assert.equal(ex.headers.get('x-switchyard-route'), 'auto');
  assert.equal(ex.headers.get('x-switchyard-tier'), 'local');
  assert.equal(ex.headers.get('x-switchyard-deployment'), 'lc-local');
  assert.equal((await fake.last()).body.model, 'fake-local');

  // LangChain's bindTools request has tools: the has_tools rule sends it to the flagship tier.
  exchanges = [];
  const withTools = await chat({ model: 'auto' }).bindTools([weather]).invoke('weather?');
  assert.equal(withTools.tool_calls[0].name, 'get_weather');
  ex = await onlyExchange('auto tools');
  assert.equal(ex.headers.get('x-switchyard-tier'), 'flagship');
  assert.equal(ex.headers.get('x-switchyard-rule'), 'rules[0]');
  assert.equal(ex.headers.get('x-switchyard-deployment'), 'lc-flagship');
  assert.equal((await fake.last()).body.model, 'fake-large');

  // Streams carry the headers too.
  exchanges = [];
  await drain(await chat({ model: 'auto' }).stream('stream me'));
  ex = await onlyExchange('auto stream');
  assert.equal(ex.headers.get('x-switchyard-deployment'), 'lc-local');
});

test('errors: upstream 429 and 400, unknown model: LangChain errors with status and message', async () => {
  const check = async (run, status, what) => {
    exchanges = [];
    let err;
    await assert.rejects(run, (e) => { err = e; return true; });
    assert.equal(err.status, status, `${what}: status (${err.message})`);
    const ex = await onlyExchange(what);
    assert.equal(ex.status, status);
    const body = JSON.parse(ex.text);
    validateError(body, what);
    assert.equal(err.error?.message, body.error.message, `${what}: LangChain keeps the proxy's error`);
    assert.ok(err.message.includes(body.error.message), `${what}: message ${err.message}`);
    return { err, body };
  };

  let r = await check(chat().invoke('[[fake status=429]]'), 429, 'upstream 429');
  assert.equal(r.err.lc_error_code, 'MODEL_RATE_LIMIT');
  assert.equal(r.body.error.type, 'rate_limit_error');
  assert.match(r.body.error.message, /fake error: status 429/);

  r = await check(chat().invoke('[[fake status=400]]'), 400, 'upstream 400');
  assert.equal(r.body.error.type, 'invalid_request_error');
  assert.match(r.body.error.message, /fake error: status 400/);

  r = await check((async () => { await drain(await chat().stream('[[fake status=429]]')); })(), 429, 'upstream 429, stream');
  assert.equal(r.err.lc_error_code, 'MODEL_RATE_LIMIT');

  r = await check(chat({ model: 'no-such-model' }).invoke('hi'), 404, 'unknown model');
  assert.equal(r.err.lc_error_code, 'MODEL_NOT_FOUND');
  assert.match(r.body.error.message, /no-such-model/);

  r = await check(embeddings().embedQuery('[[fake status=400]]'), 400, 'embeddings 400');
  assert.match(r.body.error.message, /fake error: status 400/);
});
