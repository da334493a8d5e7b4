// Prompt cache through the real binary (issue 4, DESIGN §6): a miss then a hit with the fake
// upstream seeing one call; a non-stream answer replayed as a stream and a streamed answer
// serving a non-stream request, both schema-checked and read by the official openai SDK; tenant
// isolation; Cache-Control no-cache / no-store; bypass for routes and bodies that do not qualify;
// output-changing fields change the key and deny-listed ones do not; TTL expiry; oversize
// answers, broken streams and upstream errors are never stored; embeddings cached per input.
// On a real redis-server started here: two proxies share entries; killing Redis in the middle of
// concurrent traffic fails no request (misses), /healthz says degraded, and hits resume after a
// restart without restarting the proxy.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startFake, startProxy, makeConfig, fakeDeployment, assertCleanExit, post, request, streamRaw,
  chatBody, waitFor,
  freePort, haveRedis, RedisServer,
} from './lib/harness.mjs';
import { validateChatCompletion, validateChatChunk, validateEmbeddings } from './lib/schema.mjs';
import { routesDir, writeRoutes } from './fixtures/routing.mjs';

const HDR = 'x-switchyard-cache';

let uniqSeq = 0;
/** A prompt no other test (or earlier run against a shared Redis) has used. */
const uniq = (what) => `${what} #${process.pid}-${++uniqSeq}-${Date.now()}`;

const weatherTool = {
  type: 'function',
  function: {
    name: 'get_weather',
    parameters: { type: 'object', properties: { location: { type: 'string' }, unit: { type: 'string' } } },
  },
};

/** The route table every proxy here uses; ttl of the "short" route is 1 s. */
function cacheRoutes() {
  const one = (name, mode, extra = {}) => ({
    name,
    match: { model: name },
    tiers: [{ name: 'only', targets: [name.startsWith('emb') ? 'emb-a' : 'chat-a'] }],
    ...(mode ? { cache: { mode, ttl_s: 600 } } : {}),
    ...extra,
  });
  const dir = routesDir('cache-routes');
  writeRoutes(dir, [
    one('cached', 'deterministic'),
    one('always', 'always'),
    one('never', null),
    one('short', 'always', { cache: { mode: 'always', ttl_s: 1 } }),
    one('capped', 'always', { cache: { mode: 'always', ttl_s: 600, max_entry_bytes: 3000 } }),
    one('emb', 'deterministic'),
    { name: 'direct', match: { model: '*' }, target: 'by_model_name' },
  ]);
  return dir;
}

function deployments(fake) {
  return [fakeDeployment(fake, 'chat-a', { model: 'fake-small' }), fakeDeployment(fake, 'emb-a', { model: 'fake-emb' })];
}

// Raw requests carry the same key as proxy.client() (the SDK) unless a test passes its own headers
// ({} = no key at all): the key is the tenant, so a raw request and an SDK request share entries
// only when their keys match.
const AUTH = { authorization: 'Bearer sk-client-key-must-not-leak' };

async function chat(proxy, body, headers = AUTH) {
  const r = await post(proxy.url, '/v1/chat/completions', body, { headers });
  assert.equal(r.status, 200, `chat: ${r.status} ${r.text.slice(0, 300)}`);
  const j = r.json();
  validateChatCompletion(j, 'chat answer');
  return { res: r, json: j, cache: r.headers[HDR] };
}

async function chatStream(proxy, body, headers = AUTH) {
  const r = await streamRaw(proxy.url, '/v1/chat/completions', { ...body, stream: true }, { headers });
  assert.equal(r.status, 200, `stream: ${r.status} ${r.text.slice(0, 300)}`);
  const data = r.events.filter((e) => e.data !== '[DONE]').map((e) => JSON.parse(e.data));
  data.forEach((c, i) => validateChatChunk(c, `chunk ${i}`));
  return { res: r, chunks: data, cache: r.headers[HDR], done: r.events.at(-1)?.data === '[DONE]' };
}

/** The checks every replayed or relayed stream must pass; returns the assembled message. */
function assembled(chunks, what) {
  const withChoices = chunks.filter((c) => c.choices.length > 0);
  assert.ok(withChoices.length > 0, `${what}: no choice chunks`);
  assert.equal(withChoices[0].choices[0].delta.role, 'assistant', `${what}: role not first`);
  assert.equal(new Set(chunks.map((c) => c.id)).size, 1, `${what}: ids differ`);
  let content = '';
  const calls = [];
  let finish = null;
  for (const c of withChoices) {
    const ch = c.choices[0];
    if (typeof ch.delta.content === 'string') content += ch.delta.content;
    for (const tc of ch.delta.tool_calls || []) {
      assert.equal(typeof tc.index, 'number', `${what}: tool call without index`);
      calls[tc.index] ??= { id: '', name: '', arguments: '' };
      if (tc.id) calls[tc.index].id = tc.id;
      if (tc.function?.name) calls[tc.index].name = tc.function.name;
      if (tc.function?.arguments) calls[tc.index].arguments += tc.function.arguments;
    }
    if (ch.finish_reason) finish = ch.finish_reason;
  }
  assert.ok(finish, `${what}: no finish_reason`);
  const usage = chunks.find((c) => c.usage)?.usage ?? null;
  return { content, calls, finish, usage };
}

/* ------------------------------------------------------------------ embedded store -------- */

describe('prompt cache, embedded store', () => {
  let fake;
  let proxy;
  let client;

  before(async () => {
    fake = await startFake();
    proxy = await startProxy(makeConfig({ deployments: deployments(fake), routes: cacheRoutes() }));
    client = proxy.client();
  });

  after(async () => {
    await assertCleanExit(proxy);
    await fake?.stop();
  });

  test('miss then hit: the upstream sees one call; the hit is the same answer with a fresh id', async () => {
    await fake.reset();
    const body = chatBody('cached', uniq('miss then hit'), { temperature: 0 });
    const a = await chat(proxy, body);
    assert.equal(a.cache, 'miss');
    const b = await chat(proxy, body);
    assert.equal(b.cache, 'hit');
    assert.equal((await fake.stats()).chat, 1);
    assert.deepEqual(b.json.choices, a.json.choices);
    assert.deepEqual(b.json.usage, a.json.usage);
    assert.equal(b.json.model, a.json.model);
    assert.match(b.json.id, /^chatcmpl-/);
    assert.notEqual(b.json.id, a.json.id, 'a hit gets its own id');

    // the SDK reads a hit like any answer
    const { data, response } = await client.chat.completions.create(body).withResponse();
    assert.equal(response.headers.get(HDR), 'hit');
    assert.equal(data.choices[0].message.content, a.json.choices[0].message.content);
    assert.equal((await fake.stats()).chat, 1);
  });

  test('a non-stream answer replays as a valid stream (raw SSE and the SDK), usage chunk only if asked', async () => {
    await fake.reset();
    const body = chatBody('cached', uniq('json then stream'), { temperature: 0 });
    const a = await chat(proxy, body);
    assert.equal(a.cache, 'miss');

    const s = await chatStream(proxy, { ...body, stream_options: { include_usage: true } });
    assert.equal(s.cache, 'hit');
    assert.ok(s.done, 'the replay ends with [DONE]');
    assert.equal(s.res.afterDone, '\n\n');
    const m = assembled(s.chunks, 'replay');
    assert.equal(m.content, a.json.choices[0].message.content);
    assert.equal(m.finish, a.json.choices[0].finish_reason);
    assert.deepEqual(m.usage, a.json.usage);
    assert.deepEqual(s.chunks.at(-1).choices, [], 'the usage chunk comes last with no choices');

    const s2 = await chatStream(proxy, body);
    assert.equal(s2.cache, 'hit');
    assert.ok(s2.chunks.every((c) => !c.usage), 'no usage chunk when the client did not ask');

    const { data: stream, response } = await client.chat.completions
      .create({ ...body, stream: true, stream_options: { include_usage: true } }).withResponse();
    assert.equal(response.headers.get(HDR), 'hit');
    let text = '';
    let usage = null;
    for await (const c of stream) {
      validateChatChunk(c, 'SDK replay chunk');
      text += c.choices[0]?.delta?.content ?? '';
      if (c.usage) usage = c.usage;
    }
    assert.equal(text, a.json.choices[0].message.content);
    assert.deepEqual(usage, a.json.usage);
    assert.equal((await fake.stats()).chat, 1);
  });

  test('a streamed answer serves a non-stream request (content, usage)', async () => {
    await fake.reset();
    const body = chatBody('cached', uniq('stream then json'), { temperature: 0 });
    const s = await chatStream(proxy, { ...body, stream_options: { include_usage: true } });
    assert.equal(s.cache, 'miss');
    const m = assembled(s.chunks, 'relayed stream');
    const b = await chat(proxy, body);
    assert.equal(b.cache, 'hit');
    assert.equal(b.json.choices[0].message.content, m.content);
    assert.equal(b.json.choices[0].finish_reason, m.finish);
    assert.deepEqual(b.json.usage, m.usage);
    assert.equal(b.json.object, 'chat.completion');
    assert.equal((await fake.stats()).chat, 1);

    // and the stream replays as a stream too
    const s2 = await chatStream(proxy, body);
    assert.equal(s2.cache, 'hit');
    assert.equal(assembled(s2.chunks, 'replayed stream').content, m.content);
  });

  test('parallel tool calls: stream -> non-stream hit, non-stream -> SDK .stream() helper', async () => {
    await fake.reset();
    const body = chatBody('cached', uniq('weather in Paris [[fake tool_calls=2]]'), { temperature: 0, tools: [weatherTool] });
    const s = await chatStream(proxy, body);
    assert.equal(s.cache, 'miss');
    const m = assembled(s.chunks, 'tool stream');
    assert.equal(m.calls.length, 2);
    const b = await chat(proxy, body);
    assert.equal(b.cache, 'hit');
    const msg = b.json.choices[0].message;
    assert.equal(b.json.choices[0].finish_reason, 'tool_calls');
    assert.equal(msg.content, null);
    assert.deepEqual(msg.tool_calls.map((t) => [t.id, t.type, t.function.name, t.function.arguments]),
      m.calls.map((c) => [c.id, 'function', c.name, c.arguments]));
    assert.deepEqual(JSON.parse(msg.tool_calls[1].function.arguments), { location: 'Paris', unit: 'c' });

    const runner = client.chat.completions.stream(body);
    const final = await runner.finalChatCompletion();
    assert.deepEqual(final.choices[0].message.tool_calls.map((t) => t.function.arguments),
      msg.tool_calls.map((t) => t.function.arguments));
    assert.equal((await fake.stats()).chat, 1);
  });

  test('tenants never share entries', async () => {
    await fake.reset();
    const body = chatBody('cached', uniq('tenants'), { temperature: 0 });
    const A = { authorization: 'Bearer sk-tenant-a' };
    const B = { authorization: 'Bearer sk-tenant-b' };
    assert.equal((await chat(proxy, body, A)).cache, 'miss');
    assert.equal((await chat(proxy, body, B)).cache, 'miss');
    assert.equal((await chat(proxy, body, A)).cache, 'hit');
    assert.equal((await chat(proxy, body, B)).cache, 'hit');
    assert.equal((await chat(proxy, body, {})).cache, 'miss', 'no key is a tenant of its own');
    assert.equal((await chat(proxy, body, {})).cache, 'hit');
    assert.equal((await fake.stats()).chat, 3);
  });

  test('Cache-Control: no-store skips the write, no-cache skips the lookup but refreshes', async () => {
    await fake.reset();
    const body = chatBody('always', uniq('cache-control'));
    const cc = (v) => ({ ...AUTH, 'cache-control': v });
    assert.equal((await chat(proxy, body, cc('no-store'))).cache, 'miss');
    assert.equal((await chat(proxy, body)).cache, 'miss', 'no-store left nothing behind');
    assert.equal((await chat(proxy, body)).cache, 'hit');
    assert.equal((await chat(proxy, body, cc('no-store'))).cache, 'hit', 'no-store may still be served');
    assert.equal((await chat(proxy, body, cc('no-cache'))).cache, 'bypass');
    assert.equal((await chat(proxy, body, cc('no-cache, no-store'))).cache, 'bypass');
    assert.equal((await fake.stats()).chat, 4);

    // no-cache stores what it fetched
    const fresh = chatBody('always', uniq('no-cache stores'));
    assert.equal((await chat(proxy, fresh, cc('no-cache'))).cache, 'bypass');
    assert.equal((await chat(proxy, fresh)).cache, 'hit');
  });

  test('bypass: a route without cache, and non-deterministic bodies on a deterministic route', async () => {
    await fake.reset();
    const never = chatBody('never', uniq('never'), { temperature: 0 });
    assert.equal((await chat(proxy, never)).cache, 'bypass');
    assert.equal((await chat(proxy, never)).cache, 'bypass');
    const warm = chatBody('cached', uniq('warm'), { temperature: 0.7 });
    assert.equal((await chat(proxy, warm)).cache, 'bypass');
    assert.equal((await chat(proxy, warm)).cache, 'bypass');
    const dflt = chatBody('cached', uniq('default temperature'));
    assert.equal((await chat(proxy, dflt)).cache, 'bypass');
    assert.equal((await fake.stats()).chat, 5);
    const seeded = chatBody('cached', uniq('seeded'), { temperature: 0.7, seed: 7 });
    assert.equal((await chat(proxy, seeded)).cache, 'miss');
    assert.equal((await chat(proxy, seeded)).cache, 'hit');
  });

  test('fields that change the answer change the key; deny-listed ones do not', async () => {
    const base = chatBody('cached', uniq('fields'), { temperature: 0, max_tokens: 50 });
    assert.equal((await chat(proxy, base)).cache, 'miss');
    assert.equal((await chat(proxy, base)).cache, 'hit');
    const variants = {
      top_p: { top_p: 0.5 },
      max_tokens: { max_tokens: 51 },
      max_completion_tokens: { max_completion_tokens: 50 },
      stop: { stop: ['\n\n'] },
      seed: { seed: 1 },
      presence_penalty: { presence_penalty: 0.5 },
      frequency_penalty: { frequency_penalty: 0.5 },
      logit_bias: { logit_bias: { 50256: -100 } },
      tools: { tools: [weatherTool], tool_choice: 'none' },
      response_format: { response_format: { type: 'json_object' } },
      reasoning_effort: { reasoning_effort: 'low' },
      unknown: { x_new_parameter: 1 },
      messages: { messages: [...base.messages, { role: 'assistant', content: 'ok' }, { role: 'user', content: 'more' }] },
    };
    for (const [name, extra] of Object.entries(variants)) {
      const r = await chat(proxy, { ...base, ...extra });
      assert.equal(r.cache, 'miss', `${name} must change the key`);
    }
    const same = {
      stream_false: { stream: false },
      user: { user: 'someone' },
      metadata: { metadata: { trace: 'x' } },
      key_order: Object.fromEntries(Object.entries(base).reverse()),
    };
    for (const [name, extra] of Object.entries(same)) {
      const r = await chat(proxy, { ...base, ...extra });
      assert.equal(r.cache, 'hit', `${name} must not change the key`);
    }
    // whitespace and number spelling in the raw body do not matter either
    const raw = JSON.stringify(base, null, 2).replace('"temperature": 0', '"temperature": 0.0e0');
    assert.ok(raw.includes('0.0e0'));
    const r = await post(proxy.url, '/v1/chat/completions', raw, { headers: { ...AUTH, 'content-type': 'application/json' } });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.headers[HDR], 'hit', 'spelling must not change the key');
    // a route without cache bypasses
    assert.equal((await chat(proxy, { ...base, model: 'chat-a' })).cache, 'bypass');
  });

  test('TTL: an entry expires after the route ttl_s', async () => {
    await fake.reset();
    const body = chatBody('short', uniq('ttl'));
    assert.equal((await chat(proxy, body)).cache, 'miss');
    assert.equal((await chat(proxy, body)).cache, 'hit');
    const t0 = Date.now();
    await waitFor(async () => (await chat(proxy, body)).cache === 'miss', { timeout: 5000, interval: 100, what: 'the entry to expire' });
    assert.ok(Date.now() - t0 >= 500, 'it did not expire at once');
  });

  test('a broken stream and an upstream error are never stored', async () => {
    await fake.reset();
    const cut = chatBody('always', uniq('cut [[fake drop_after=2 chunks=6]]'));
    for (let i = 0; i < 2; i++) {
      const r = await streamRaw(proxy.url, '/v1/chat/completions', { ...cut, stream: true }).catch((e) => e);
      const text = r.text ?? '';
      assert.ok(!text.includes('"finish_reason":"stop"'), 'the cut stream has no finish');
    }
    assert.equal((await fake.stats()).chat, 2, 'the cut stream was not served from the cache');

    const failing = chatBody('always', uniq('fails [[fake status=500]]'));
    for (let i = 0; i < 2; i++) {
      const r = await post(proxy.url, '/v1/chat/completions', failing);
      assert.ok(r.status >= 500, `status ${r.status}`);
      assert.notEqual(r.headers[HDR], 'hit');
    }
    assert.ok((await fake.stats()).chat >= 4);
  });

  test('embeddings are cached per input: only the misses go upstream, order kept, base64 too', async () => {
    await fake.reset();
    const [x, y, z] = [uniq('alpha'), uniq('beta'), uniq('gamma')];
    const r1 = await post(proxy.url, '/v1/embeddings', { model: 'emb', input: [x, y] }, { headers: AUTH });
    assert.equal(r1.status, 200, r1.text);
    const e1 = validateEmbeddings(r1.json(), 'embeddings 1');
    assert.equal(r1.headers[HDR], 'miss');

    const r2 = await post(proxy.url, '/v1/embeddings', { model: 'emb', input: [y, z] }, { headers: AUTH });
    assert.equal(r2.status, 200, r2.text);
    const e2 = validateEmbeddings(r2.json(), 'embeddings 2');
    assert.deepEqual((await fake.last()).body.input, [z], 'only the new input went upstream');
    assert.deepEqual(e2.data.map((d) => d.index), [0, 1]);
    assert.deepEqual(e2.data[0].embedding, e1.data[1].embedding);
    assert.equal((await fake.stats()).embeddings, 2);

    const r3 = await post(proxy.url, '/v1/embeddings', { model: 'emb', input: [z, x, y] }, { headers: AUTH });
    assert.equal(r3.headers[HDR], 'hit');
    const e3 = validateEmbeddings(r3.json(), 'embeddings 3');
    assert.deepEqual(e3.data[1].embedding, e1.data[0].embedding);
    assert.deepEqual(e3.data[0].embedding, e2.data[1].embedding);
    assert.equal((await fake.stats()).embeddings, 2, 'a full hit makes no upstream call');

    // the SDK asks for base64 and decodes it: the same vectors
    const sdk = await client.embeddings.create({ model: 'emb', input: x });
    assert.deepEqual(sdk.data[0].embedding, e1.data[0].embedding);
    assert.equal((await fake.stats()).embeddings, 2);
  });
});

describe('prompt cache, entry size cap', () => {
  let fake;
  let proxy;

  before(async () => {
    fake = await startFake();
    proxy = await startProxy(makeConfig({
      deployments: deployments(fake),
      routes: cacheRoutes(),
      mem_store: { max_value_bytes: 4096 },
    }));
  });

  after(async () => {
    await assertCleanExit(proxy);
    await fake?.stop();
  });

  test('an answer over the cap is served but not stored; a small one is', async () => {
    await fake.reset();
    const big = chatBody('always', uniq('big [[fake words=2000]]'));
    const a = await chat(proxy, big);
    assert.ok(a.res.body.length > 4096);
    assert.equal(a.cache, 'miss');
    assert.equal((await chat(proxy, big)).cache, 'miss');
    const bigStream = chatBody('always', uniq('big stream [[fake chunks=3000]]'));
    await chatStream(proxy, bigStream);
    assert.equal((await chatStream(proxy, bigStream)).cache, 'miss');
    const small = chatBody('always', uniq('small'));
    assert.equal((await chat(proxy, small)).cache, 'miss');
    assert.equal((await chat(proxy, small)).cache, 'hit');
    assert.equal((await fake.stats()).chat, 5);
  });
});

describe('prompt cache, the route\'s max_entry_bytes', () => {
  let fake;
  let proxy;

  before(async () => {
    fake = await startFake();
    proxy = await startProxy(makeConfig({ deployments: deployments(fake), routes: cacheRoutes() }));
  });

  after(async () => {
    await assertCleanExit(proxy);
    await fake?.stop();
  });

  test('an answer over the route cap is served but not stored; the same answer on a route without that cap is', async () => {
    await fake.reset();
    const prompt = uniq('medium [[fake words=1500]]');
    const capped = chatBody('capped', prompt);
    const a = await chat(proxy, capped);
    assert.equal(a.res.status, 200);
    assert.ok(a.res.body.length > 6000);
    assert.equal(a.cache, 'miss');
    assert.equal((await chat(proxy, capped)).cache, 'miss');
    const sp = uniq('medium stream [[fake chunks=1500]]');
    const s1 = await chatStream(proxy, chatBody('capped', sp));
    assert.ok(s1.done);
    assert.equal((await chatStream(proxy, chatBody('capped', sp))).cache, 'miss');
    const open = chatBody('always', prompt);
    assert.equal((await chat(proxy, open)).cache, 'miss');
    assert.equal((await chat(proxy, open)).cache, 'hit');
    assert.equal((await fake.stats()).chat, 5);
  });
});

describe('prompt cache on Redis', { skip: haveRedis ? false : 'redis-server not installed' }, () => {
  let fake;
  let redis;
  let p1;
  let p2;

  before(async () => {
    redis = new RedisServer(await freePort());
    await redis.start();
    fake = await startFake();
    const cfg = () => makeConfig({
      deployments: deployments(fake),
      routes: cacheRoutes(),
      redis: { url: `redis://127.0.0.1:${redis.port}/0`, timeout_ms: 50 },
    });
    p1 = await startProxy(cfg());
    p2 = await startProxy(cfg());
  });

  after(async () => {
    await assertCleanExit(p1);
    await assertCleanExit(p2);
    await fake?.stop();
    await redis?.stop();
  });

  const health = async (p) => (await request(p.url, 'GET', '/healthz')).json();

  test('two proxies on one Redis share entries', async () => {
    await fake.reset();
    const body = chatBody('cached', uniq('shared'), { temperature: 0 });
    const a = await chat(p1, body);
    assert.equal(a.cache, 'miss');
    const b = await chat(p2, body);
    assert.equal(b.cache, 'hit');
    assert.deepEqual(b.json.choices, a.json.choices);
    const s = await chatStream(p2, body);
    assert.equal(s.cache, 'hit');
    assert.equal((await fake.stats()).chat, 1);
  });

  test('Redis killed under concurrent load: every request succeeds, /healthz degraded; restart: hits resume', async () => {
    const hot = chatBody('cached', uniq('hot'), { temperature: 0 });
    assert.equal((await chat(p1, hot)).cache, 'miss');
    assert.equal((await chat(p1, hot)).cache, 'hit');
    assert.equal((await health(p1)).status, 'ok');

    let killed = false;
    const results = [];
    const worker = async (w) => {
      for (let i = 0; i < 15; i++) {
        if (w === 0 && i === 5) {
          await redis.kill();
          killed = true;
        }
        const p = i % 2 ? p1 : p2;
        const body = i % 3 === 0 ? hot : chatBody('cached', uniq(`load ${w}`), { temperature: 0 });
        const stream = i % 4 === 1;
        const r = stream ? await chatStream(p, body) : await chat(p, body);
        results.push({ killed, cache: r.cache });
      }
    };
    await Promise.all(Array.from({ length: 8 }, (_, w) => worker(w)));
    assert.equal(results.length, 120, 'every request answered 200');
    await waitFor(async () => (await health(p1)).status === 'degraded', { timeout: 5000, what: 'p1 /healthz degraded' });
    await waitFor(async () => (await health(p2)).status === 'degraded', { timeout: 5000, what: 'p2 /healthz degraded' });
    const h = await health(p1);
    assert.equal(h.store.healthy, false);
    // while Redis is down the hot entry is a miss, not an error
    assert.equal((await chat(p1, hot)).cache, 'miss');
    const s = await chatStream(p2, hot);
    assert.equal(s.cache, 'miss');
    assert.ok(s.done);

    await redis.start(); // same port, empty
    await waitFor(async () => (await health(p1)).status === 'ok', { timeout: 10000, what: 'p1 to reconnect' });
    await waitFor(async () => (await health(p2)).status === 'ok', { timeout: 10000, what: 'p2 to reconnect' });
    assert.equal((await chat(p1, hot)).cache, 'miss');
    await waitFor(async () => (await chat(p2, hot)).cache === 'hit', { timeout: 5000, what: 'hits to resume' });
    assert.equal((await chat(p1, hot)).cache, 'hit');
  });
});
