// Bad input and upstream faults: every error is an OpenAI-shaped body with the right status,
// nothing crashes, hangs or leaks (the proxy must still be healthy and exit 0 at the end).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import OpenAI from 'openai';
import {
  startFake, startProxy, makeConfig, fakeDeployment, assertCleanExit, request, post, streamRaw,
  errorOf, chatBody,
} from './lib/harness.mjs';
import { validateError, validateChatChunk, validateChatCompletion } from './lib/schema.mjs';

const MAX_BODY = 65536;
const MAX_DEPTH = 32;
const UNSET_ENV = 'SY_IT_SURELY_UNSET_KEY_7f3a';

let fake;
let proxy;
let client;
let deadPort;

/** A loopback port with nothing listening on it. */
async function closedPort() {
  const srv = net.createServer();
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  const { port } = srv.address();
  await new Promise((r) => srv.close(r));
  return port;
}

before(async () => {
  delete process.env[UNSET_ENV];
  fake = await startFake();
  deadPort = await closedPort();
  proxy = await startProxy(makeConfig({
    server: { max_body_bytes: MAX_BODY, max_json_depth: MAX_DEPTH },
    // fault modes are exercised one after another on one deployment: keep its breaker shut
    upstream: { retry_base_ms: 10, retry_max_ms: 200, breaker_failures: 1000 },
    deployments: [
      fakeDeployment(fake, 'ok', { model: 'fake-small' }),
      fakeDeployment(fake, 'faulty', { model: 'fake-faulty' }),
      fakeDeployment(fake, 'short', { model: 'fake-short', first_byte_timeout_ms: 800, idle_timeout_ms: 800, total_timeout_ms: 8000 }),
      fakeDeployment(fake, 'slow', { model: 'fake-slow', directives: { first_byte_ms: 4000 }, first_byte_timeout_ms: 500 }),
      { name: 'down', provider: 'openai', base_url: `http://127.0.0.1:${deadPort}/v1`, model: 'nothing', price: { input: 0, output: 0 }, connect_timeout_ms: 2000 },
      fakeDeployment(fake, 'needs-key', { model: 'fake-keyed', api_key_env: UNSET_ENV }),
    ],
    aliases: { 'slow-then-ok': ['slow', 'ok'] },
  }));
  client = proxy.client();
});

after(async () => {
  await assertCleanExit(proxy);
  await fake?.stop();
});

/** Asserts <res> is an OpenAI error with <status>; returns the inner error object. */
function expectError(res, status, what) {
  assert.equal(res.status, status, `${what}: status ${res.status}, body ${res.text.slice(0, 300)}`);
  assert.match(res.headers['content-type'] || '', /application\/json/, `${what}: content-type`);
  const j = JSON.parse(res.text);
  validateError(j, what);
  assert.ok(j.error.message.length > 0, `${what}: empty message`);
  return j.error;
}

/** Sends raw bytes (Buffer) as a POST body; tolerates nothing: the proxy must answer. */
function rawPost(path, bytes, headers = {}) {
  return new Promise((resolve, reject) => {
    const req = http.request({
      host: '127.0.0.1', port: proxy.port, path, method: 'POST',
      headers: { 'content-type': 'application/json', 'content-length': bytes.length, ...headers },
    }, (res) => {
      const parts = [];
      res.on('data', (d) => parts.push(d));
      res.on('end', () => {
        const text = Buffer.concat(parts).toString('utf8');
        resolve({ status: res.statusCode, headers: res.headers, text });
      });
    });
    req.setTimeout(20000, () => req.destroy(new Error('no answer within 20 s')));
    req.on('error', reject);
    req.end(bytes);
  });
}

/* ----------------------------------------------------------------------- bad input -------- */

test('malformed JSON: 400', async () => {
  for (const body of ['{"model": "ok", "messages": [', 'not json at all', '{"model":"ok",}', '']) {
    const r = await rawPost('/v1/chat/completions', Buffer.from(body));
    const e = expectError(r, 400, `malformed ${JSON.stringify(body)}`);
    assert.equal(e.type, 'invalid_request_error');
  }
});

test('wrong types and missing fields: 400', async () => {
  const cases = {
    'model is a number': { model: 42, messages: [{ role: 'user', content: 'x' }] },
    'messages is a string': { model: 'ok', messages: 'hello' },
    'messages items are not objects': { model: 'ok', messages: ['hello'] },
    'body is an array': [{ model: 'ok' }],
    'missing model': { messages: [{ role: 'user', content: 'x' }] },
    'missing messages': { model: 'ok' },
    'stream is a string': { model: 'ok', messages: [{ role: 'user', content: 'x' }], stream: 'yes' },
  };
  for (const [what, body] of Object.entries(cases)) {
    const r = await post(proxy.url, '/v1/chat/completions', body);
    const e = expectError(r, 400, what);
    assert.equal(e.type, 'invalid_request_error', what);
  }
  const r = await post(proxy.url, '/v1/embeddings', { model: 'ok' });
  expectError(r, 400, 'embeddings without input');
  await assert.rejects(client.chat.completions.create({ model: 'ok' }), (e) => e instanceof OpenAI.BadRequestError);
});

test('body over server.max_body_bytes: 413', async () => {
  const big = JSON.stringify(chatBody('ok', 'x'.repeat(MAX_BODY * 3)));
  const r = await rawPost('/v1/chat/completions', Buffer.from(big));
  expectError(r, 413, 'huge body');
  // The proxy is still fine afterwards.
  const ok = await post(proxy.url, '/v1/chat/completions', chatBody('ok'));
  assert.equal(ok.status, 200, ok.text);
});

test('huge body sent chunked (no content-length): 413', async () => {
  const r = await new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port: proxy.port, path: '/v1/chat/completions', method: 'POST',
      headers: { 'content-type': 'application/json', 'transfer-encoding': 'chunked' } }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { text += d; });
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, text }));
    });
    req.setTimeout(20000, () => req.destroy(new Error('no answer within 20 s')));
    req.on('error', reject);
    const piece = 'x'.repeat(16384);
    req.write('{"model":"ok","messages":[{"role":"user","content":"');
    for (let i = 0; i < 12; i++) req.write(piece);
    req.end('"}]}');
  });
  expectError(r, 413, 'chunked huge body');
});

test('nesting deeper than server.max_json_depth: 400 or 413', async () => {
  for (const depth of [MAX_DEPTH + 5, 20000]) {
    const body = `{"model":"ok","messages":[{"role":"user","content":"x"}],"metadata":${'['.repeat(depth)}${']'.repeat(depth)}}`;
    const r = await rawPost('/v1/chat/completions', Buffer.from(body));
    assert.ok(r.status === 400 || r.status === 413, `depth ${depth}: status ${r.status} ${r.text.slice(0, 200)}`);
    expectError(r, r.status, `depth ${depth}`);
  }
  const objs = `{"model":"ok","messages":[{"role":"user","content":"x"}],"x":${'{"a":'.repeat(200)}1${'}'.repeat(200)}}`;
  const r = await rawPost('/v1/chat/completions', Buffer.from(objs));
  assert.ok(r.status === 400 || r.status === 413, `nested objects: ${r.status}`);
  expectError(r, r.status, 'nested objects');
});

test('invalid UTF-8 in the body: 400', async () => {
  const head = Buffer.from('{"model":"ok","messages":[{"role":"user","content":"');
  const tail = Buffer.from('"}]}');
  const bad = {
    'lone 0xff': [0xff],
    'truncated 3-byte sequence': [0xe2, 0x82],
    'overlong slash': [0xc0, 0xaf],
    'UTF-8 encoded surrogate': [0xed, 0xa0, 0x80],
    'continuation byte alone': [0x80, 0x41],
  };
  for (const [what, bytes] of Object.entries(bad)) {
    const r = await rawPost('/v1/chat/completions', Buffer.concat([head, Buffer.from(bytes), tail]));
    expectError(r, 400, `invalid UTF-8 (${what})`);
  }
});

test('unknown model: 404 model_not_found', async () => {
  const r = await post(proxy.url, '/v1/chat/completions', chatBody('no-such-model'));
  const e = expectError(r, 404, 'unknown model');
  assert.equal(e.code, 'model_not_found');
  const em = await post(proxy.url, '/v1/embeddings', { model: 'no-such-model', input: 'x' });
  assert.equal(expectError(em, 404, 'unknown embeddings model').code, 'model_not_found');
  await assert.rejects(client.chat.completions.create(chatBody('no-such-model')),
    (err) => err instanceof OpenAI.NotFoundError && err.code === 'model_not_found');
});

test('wrong method: 405', async () => {
  for (const [method, path] of [['GET', '/v1/chat/completions'], ['PUT', '/v1/embeddings'],
    ['DELETE', '/v1/models'], ['POST', '/v1/models'], ['POST', '/healthz']]) {
    const r = await request(proxy.url, method, path, method === 'GET' || method === 'DELETE' ? {} : { body: '{}' });
    expectError(r, 405, `${method} ${path}`);
  }
});

test('unknown path: 404', async () => {
  for (const [method, path] of [['GET', '/v1/nope'], ['POST', '/v2/chat/completions'], ['GET', '/'],
    ['POST', '/v1/chat/completions/extra']]) {
    const r = await request(proxy.url, method, path, method === 'POST' ? { body: chatBody('ok') } : {});
    expectError(r, 404, `${method} ${path}`);
  }
});

test('disabled deployment (api_key_env unset): 503 naming the variable', async () => {
  const r = await post(proxy.url, '/v1/chat/completions', chatBody('needs-key'));
  const e = expectError(r, 503, 'disabled deployment');
  assert.ok(e.message.includes(UNSET_ENV), `message should name ${UNSET_ENV}: ${e.message}`);
});

test('upstream unreachable: 502', async () => {
  const t0 = Date.now();
  const r = await post(proxy.url, '/v1/chat/completions', chatBody('down'));
  expectError(r, 502, 'unreachable upstream');
  assert.ok(Date.now() - t0 < 15000, 'took too long');
  const s = await post(proxy.url, '/v1/chat/completions', chatBody('down', 'x', { stream: true }));
  expectError(s, 502, 'unreachable upstream, stream');
});

/* ----------------------------------------------------------------------- upstream faults -- */

test('upstream status codes are kept, bodies rewrapped (openai shape)', async () => {
  const wrong = [];
  for (const status of [400, 401, 403, 404, 409, 422, 429, 500, 502, 503]) {
    const r = await post(proxy.url, '/v1/chat/completions', chatBody('faulty', `[[fake status=${status}]]`));
    try {
      expectError(r, status, `upstream ${status}`);
    } catch (e) {
      wrong.push(e.message.split('\n')[0]);
    }
  }
  assert.deepEqual(wrong, [], `upstream statuses not kept:\n${wrong.join('\n')}`);
});

test('upstream status on a stream request: HTTP error before any byte', async () => {
  const r = await post(proxy.url, '/v1/chat/completions', chatBody('faulty', '[[fake status=503]]', { stream: true }));
  expectError(r, 503, 'stream upstream 503');
  await assert.rejects(async () => {
    const s = await client.chat.completions.create(chatBody('faulty', '[[fake status=400]]', { stream: true }));
    for await (const _ of s) { /* drain */ }
  }, (e) => e instanceof OpenAI.BadRequestError);
});

test('Retry-After from a 429/503 upstream is passed to the client', async () => {
  for (const status of [429, 503]) {
    const r = await post(proxy.url, '/v1/chat/completions', chatBody('faulty', `[[fake status=${status} retry_after=1]]`));
    expectError(r, status, `upstream ${status} with Retry-After`);
    assert.equal(r.headers['retry-after'], '1', `${status}: retry-after header not passed on`);
  }
});

/** What the fake answers directly for these directives (the upstream's own error text). */
async function upstreamErrorText(directives) {
  const r = await post(fake.url, '/v1/chat/completions', chatBody('fake', `[[fake ${directives}]]`));
  const t = r.text;
  try {
    const j = JSON.parse(t);
    if (typeof j.error === 'string') return j.error;
    if (j.error && typeof j.error.message === 'string') return j.error.message;
    if (typeof j.message === 'string') return j.message;
    if (typeof j.detail === 'string') return j.detail;
  } catch { /* text */ }
  return t.trim();
}

test('upstream error shapes (ollama, vllm, fastapi, text) rewrapped, status kept', async () => {
  for (const shape of ['openai', 'ollama', 'vllm', 'fastapi', 'text']) {
    for (const status of [400, 404, 500, 503]) {
      const d = `status=${status} shape=${shape}`;
      const upstreamMsg = await upstreamErrorText(d);
      const r = await post(proxy.url, '/v1/chat/completions', chatBody('faulty', `[[fake ${d}]]`));
      const e = expectError(r, status, `shape=${shape} status=${status}`);
      assert.ok(upstreamMsg.length > 0);
      assert.ok(e.message.includes(upstreamMsg), `shape=${shape}: message ${JSON.stringify(e.message)} lacks upstream text ${JSON.stringify(upstreamMsg)}`);
    }
  }
});

test('the SDK raises typed errors for rewrapped upstream errors', async () => {
  await assert.rejects(client.chat.completions.create(chatBody('faulty', '[[fake status=422 shape=fastapi]]')),
    (e) => e instanceof OpenAI.UnprocessableEntityError && typeof e.message === 'string');
  await assert.rejects(client.chat.completions.create(chatBody('faulty', '[[fake status=500 shape=ollama]]')),
    (e) => e instanceof OpenAI.InternalServerError);
});

test('drop mid-stream: the stream ends with data: {"error":...}', async () => {
  const r = await streamRaw(proxy.url, '/v1/chat/completions',
    chatBody('faulty', '[[fake chunks=10 drop_after=3]]', { stream: true }));
  assert.equal(r.status, 200);
  const datas = r.events.map((e) => e.data).filter((d) => d !== '[DONE]');
  const parsed = datas.map((d) => JSON.parse(d));
  const errIdx = parsed.findIndex((p) => p.error);
  assert.ok(errIdx >= 0, `no error event; events: ${datas.join(' | ').slice(0, 500)}`);
  assert.equal(errIdx, parsed.length - 1, 'error event must be the last data event');
  validateError(parsed[errIdx], 'mid-stream error event');
  for (const p of parsed.slice(0, errIdx)) validateChatChunk(p);
  assert.ok(parsed.slice(0, errIdx).some((p) => p.choices?.[0]?.delta?.content), 'content before the drop');

  // The SDK surfaces it as an error while iterating.
  await assert.rejects(async () => {
    const s = await client.chat.completions.create(chatBody('faulty', '[[fake chunks=10 drop_after=2]]', { stream: true }));
    for await (const _ of s) { /* drain */ }
  }, (e) => e instanceof OpenAI.APIError);
});

test('drop mid-body (non-stream): 502', async () => {
  const r = await post(proxy.url, '/v1/chat/completions', chatBody('faulty', '[[fake drop_after=1]]'));
  expectError(r, 502, 'non-stream drop');
});

test('stall: first-byte timeout gives 504', async () => {
  const t0 = Date.now();
  const r = await post(proxy.url, '/v1/chat/completions', chatBody('short', '[[fake stall=1]]'));
  const took = Date.now() - t0;
  expectError(r, 504, 'stall');
  assert.ok(took >= 700 && took < 8000, `504 after ${took} ms (first_byte_timeout_ms 800)`);
  const s = await post(proxy.url, '/v1/chat/completions', chatBody('short', '[[fake stall=1]]', { stream: true }));
  expectError(s, 504, 'stall, stream');
});

test('idle timeout after the role chunk, before any content: 504 before the first byte', async () => {
  // The fake sends the role chunk at once and the first content piece after interval_ms; the
  // relay holds the role chunk back until content (DESIGN §5), so the idle timeout is still a
  // failure before the first byte: an error answer, not a 200 stream. (An idle timeout after
  // content ends the stream with an error event; the fake has no directive to pause there.)
  const t0 = Date.now();
  const r = await streamRaw(proxy.url, '/v1/chat/completions',
    chatBody('short', '[[fake chunks=5 interval_ms=3000]]', { stream: true }));
  assert.equal(r.status, 504, r.text);
  const e = JSON.parse(r.text);
  validateError(e);
  assert.match(e.error.message, /before its first content/);
  assert.ok(Date.now() - t0 < 8000, 'idle timeout not applied');
});

test('idle timeout between stream chunks, after content, ends the stream with an error event', async () => {
  const t0 = Date.now();
  const r = await streamRaw(proxy.url, '/v1/chat/completions',
    chatBody('short', '[[fake chunks=5 pause_after=1 pause_ms=3000]]', { stream: true }));
  assert.equal(r.status, 200);
  const data = r.events.filter((e) => e.data !== '[DONE]').map((e) => JSON.parse(e.data));
  assert.ok(data.some((j) => j.choices?.[0]?.delta?.content), 'no content before the pause');
  const last = data.pop();
  assert.ok(last.error, `last event is not an error: ${JSON.stringify(last)}`);
  validateError(last);
  assert.match(last.error.message, /mid-answer/);
  assert.ok(Date.now() - t0 < 8000, 'idle timeout not applied');
});

test('slow first byte: first-byte timeout (504), alias falls back to the next deployment', async () => {
  const r = await post(proxy.url, '/v1/chat/completions', chatBody('slow'));
  expectError(r, 504, 'slow first byte');

  const t0 = Date.now();
  const { data, response } = await client.chat.completions.create(chatBody('slow-then-ok', 'fallback')).withResponse();
  validateChatCompletion(data);
  assert.equal(response.headers.get('x-switchyard-deployment'), 'ok');
  assert.ok(Date.now() - t0 < 4000, 'fallback waited for the slow upstream instead of timing out');
});

test('malformed JSON from the upstream: 502 (non-stream), error ending (stream)', async () => {
  const r = await post(proxy.url, '/v1/chat/completions', chatBody('faulty', '[[fake malformed=1]]'));
  expectError(r, 502, 'malformed upstream JSON');

  const s = await streamRaw(proxy.url, '/v1/chat/completions', chatBody('faulty', '[[fake malformed=1]]', { stream: true }));
  if (s.status === 200) {
    const last = s.events.filter((e) => e.data !== '[DONE]').pop();
    assert.ok(last, 'empty stream');
    const j = JSON.parse(last.data);
    assert.ok(j.error, 'stream must end with an error event');
    validateError(j);
  } else {
    assert.equal(s.status, 502, s.text);
    validateError(JSON.parse(s.text));
  }
});

test('embeddings errors are rewrapped too', async () => {
  const r = await post(proxy.url, '/v1/embeddings', { model: 'faulty', input: '[[fake status=500 shape=text]]' });
  expectError(r, 500, 'embeddings 500 text');
});

test('the proxy is still healthy after all of the above', async () => {
  const h = await request(proxy.url, 'GET', '/healthz');
  assert.equal(h.status, 200);
  const r = await client.chat.completions.create(chatBody('ok', 'still alive'));
  assert.match(r.choices[0].message.content, /still alive/);
});
