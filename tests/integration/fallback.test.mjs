// Aliases: an ordered list of deployments. Before the first byte reaches the client, a connect
// error, timeout, 429 or 5xx moves to the next target (backoff honouring Retry-After); after it,
// the stream ends with an error event. When every target fails the client gets the last error.
// A stream's role chunk alone is not a first byte: it is held back until content, so a cut right
// after it still falls back.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import {
  startFake, startProxy, makeConfig, fakeDeployment, assertCleanExit, post, streamRaw, chatBody, errorOf,
} from './lib/harness.mjs';
import { validateChatCompletion, validateChatChunk, validateError } from './lib/schema.mjs';

let fake;
let proxy;
let client;

async function closedPort() {
  const srv = net.createServer();
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  const { port } = srv.address();
  await new Promise((r) => srv.close(r));
  return port;
}

before(async () => {
  fake = await startFake();
  const dead = await closedPort();
  proxy = await startProxy(makeConfig({
    upstream: { retry_base_ms: 20, retry_max_ms: 3000, max_attempts: 3, breaker_failures: 1000 },
    deployments: [
      fakeDeployment(fake, 'good', { model: 'fake-good' }),
      fakeDeployment(fake, 'bad503', { model: 'fake-503', directives: { status: 503 } }),
      fakeDeployment(fake, 'bad502', { model: 'fake-502', directives: { status: 502, shape: 'ollama' } }),
      fakeDeployment(fake, 'bad500', { model: 'fake-500', directives: { status: 500, shape: 'fastapi' } }),
      fakeDeployment(fake, 'bad400', { model: 'fake-400', directives: { status: 400 } }),
      fakeDeployment(fake, 'limited', { model: 'fake-429', directives: { status: 429, retry_after: 1 } }),
      fakeDeployment(fake, 'dropper', { model: 'fake-drop', directives: { chunks: 6, drop_after: 2 } }),
      fakeDeployment(fake, 'role-dropper', { model: 'fake-role-drop', directives: { drop_after: 0 } }),
      fakeDeployment(fake, 'staller', { model: 'fake-stall', directives: { stall: 1 }, first_byte_timeout_ms: 400 }),
      { name: 'down', provider: 'openai', base_url: `http://127.0.0.1:${dead}/v1`, model: 'x', price: { input: 0, output: 0 } },
    ],
    aliases: {
      'failover': ['bad503', 'good'],
      'connect-failover': ['down', 'good'],
      'timeout-failover': ['staller', 'good'],
      'rate-limited': ['limited', 'good'],
      'all-bad': ['bad503', 'bad502', 'bad500'],
      'client-error': ['bad400', 'good'],
      'mid-stream': ['dropper', 'good'],
      'role-then-cut': ['role-dropper', 'good'],
    },
  }));
  client = proxy.client();
});

after(async () => {
  await assertCleanExit(proxy);
  await fake?.stop();
});

/** Chat requests the fake has seen since the last reset. */
const chats = async () => (await fake.stats()).chat;

test('5xx on the first target: served by the second', async () => {
  await fake.reset();
  const { data, response } = await client.chat.completions.create(chatBody('failover', 'fo')).withResponse();
  validateChatCompletion(data);
  assert.match(data.choices[0].message.content, /You said: fo/);
  assert.equal(response.headers.get('x-switchyard-deployment'), 'good');
  assert.equal(await chats(), 2, 'one attempt on bad503, one on good');
  assert.equal((await fake.last()).body.model, 'fake-good');
});

test('connect error on the first target: served by the second', async () => {
  const { response } = await client.chat.completions.create(chatBody('connect-failover')).withResponse();
  assert.equal(response.headers.get('x-switchyard-deployment'), 'good');
});

test('first-byte timeout on the first target: served by the second', async () => {
  const t0 = Date.now();
  const { response } = await client.chat.completions.create(chatBody('timeout-failover')).withResponse();
  assert.equal(response.headers.get('x-switchyard-deployment'), 'good');
  assert.ok(Date.now() - t0 < 5000);
});

test('streams fail over too (before the first byte)', async () => {
  const r = await streamRaw(proxy.url, '/v1/chat/completions', chatBody('failover', 'st', { stream: true }));
  assert.equal(r.status, 200, r.text);
  assert.equal(r.headers['x-switchyard-deployment'], 'good');
  const data = r.events.map((e) => e.data);
  assert.equal(data[data.length - 1], '[DONE]');
  for (const d of data.slice(0, -1)) validateChatChunk(JSON.parse(d));
});

test('429 on the first target: served by the second', async () => {
  await fake.reset();
  const t0 = Date.now();
  const { data, response } = await client.chat.completions.create(chatBody('rate-limited')).withResponse();
  validateChatCompletion(data);
  assert.equal(response.headers.get('x-switchyard-deployment'), 'good');
  assert.ok(Date.now() - t0 < 6000, `took ${Date.now() - t0} ms`);
});

test('429 + Retry-After: a deployment is never asked again before Retry-After has passed', async () => {
  // A single rate-limited deployment: whatever the retry policy, consecutive attempts on it
  // must be at least Retry-After (1 s, below upstream.retry_max_ms) apart, and the client
  // finally gets the 429 with its Retry-After.
  await fake.reset();
  const t0 = Date.now();
  const r = await post(proxy.url, '/v1/chat/completions', chatBody('limited'));
  const took = Date.now() - t0;
  assert.equal(r.status, 429, r.text);
  validateError(JSON.parse(r.text));
  assert.ok(r.headers['retry-after'], 'Retry-After not passed to the client');
  const attempts = await chats();
  assert.ok(attempts >= 1);
  assert.ok(took >= (attempts - 1) * 950, `${attempts} attempts in ${took} ms: Retry-After: 1 not honoured`);
  assert.ok(took < 10000, `took ${took} ms`);
});

test('every target fails: the client gets the last error', async () => {
  await fake.reset();
  const r = await post(proxy.url, '/v1/chat/completions', chatBody('all-bad'));
  assert.equal(r.status, 500, `expected the last target's 500, got ${r.status}: ${r.text}`);
  validateError(JSON.parse(r.text));
  assert.equal(await chats(), 3, 'each target tried once');

  const s = await post(proxy.url, '/v1/chat/completions', chatBody('all-bad', 'x', { stream: true }));
  assert.equal(s.status, 500, s.text);
  validateError(JSON.parse(s.text));
});

test('a 400 from the first target is not retried elsewhere', async () => {
  await fake.reset();
  const r = await post(proxy.url, '/v1/chat/completions', chatBody('client-error'));
  assert.equal(r.status, 400, r.text);
  validateError(JSON.parse(r.text));
  assert.equal(await chats(), 1, 'a client error must not fall back');
});

test('after the first byte there is no fallback: the stream ends with an error event', async () => {
  await fake.reset();
  const r = await streamRaw(proxy.url, '/v1/chat/completions', chatBody('mid-stream', 'x', { stream: true }));
  assert.equal(r.status, 200);
  assert.equal(r.headers['x-switchyard-deployment'], 'dropper');
  const last = JSON.parse(r.events.filter((e) => e.data !== '[DONE]').pop().data);
  assert.ok(last.error, 'stream must end with an error event');
  validateError(last);
  assert.equal(await chats(), 1, 'no second attempt after bytes reached the client');
  assert.ok(errorOf({ text: JSON.stringify(last) }).message.length > 0);
});

test('a stream cut right after its role chunk (no content yet) still falls back', async () => {
  await fake.reset();
  const { data: stream, response } = await client.chat.completions
    .create(chatBody('role-then-cut', 'rc', { stream: true })).withResponse();
  assert.equal(response.headers.get('x-switchyard-deployment'), 'good');
  assert.equal(response.headers.get('x-switchyard-attempts'), '2');
  const chunks = [];
  for await (const c of stream) chunks.push(validateChatChunk(c, `chunk ${chunks.length}`));
  assert.equal(chunks.filter((c) => c.choices[0]?.delta?.role).length, 1, 'one role chunk, from the second target');
  assert.ok(chunks.every((c) => c.model === 'fake-good'));
  assert.match(chunks.map((c) => c.choices[0]?.delta?.content ?? '').join(''), /You said: rc/);
  assert.equal(await chats(), 2, 'the cut attempt, then the good one');
});
