// Affinity and circuit breakers shared through Redis (issue 4 item 4, DESIGN §5, §11): two proxy
// instances on one real redis-server.
//  - affinity: a conversation first served on instance A by deployment aff-x goes to aff-x on
//    instance B too, although B's own route orders aff-y first (the two instances run different
//    route files, as during a rolling change; a new conversation on B shows B's own choice);
//  - breaker: a deployment failing on A until A opens its breaker is skipped by B without B
//    seeing a failure (B's requests go to the other target, the failing deployment gets none of
//    them); after the cooldown B's probe succeeds, and A's breaker closes too;
//  - Redis killed: every request still succeeds on local state (local affinity, local breakers).
// Reports how long B took to see A's breaker (a log line, never asserted).
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import {
  startFake, startProxy, makeConfig, fakeDeployment, assertCleanExit, post, request, streamRaw,
  waitFor, freePort, haveRedis, RedisServer,
} from './lib/harness.mjs';
import { validateChatCompletion, validateChatChunk } from './lib/schema.mjs';
import { routesDir, writeRoutes, startFlaky } from './fixtures/routing.mjs';

/** The suite's redis-server, with a raw client for asserting what the proxies stored. */
class Redis extends RedisServer {
  /** One command (arguments as strings); resolves to the parsed RESP reply. */
  command(...args) {
    return new Promise((resolve, reject) => {
      const sock = net.connect({ host: '127.0.0.1', port: this.port });
      let buf = Buffer.alloc(0);
      sock.setTimeout(2000, () => { sock.destroy(); reject(new Error('redis command timed out')); });
      sock.on('error', reject);
      sock.on('connect', () => {
        sock.write(`*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('')}`);
      });
      sock.on('data', (d) => {
        buf = Buffer.concat([buf, d]);
        const r = parseResp(buf, 0);
        if (r) { sock.destroy(); resolve(r.value); }
      });
    });
  }
}

/** A RESP value at <buf>[<i>..], or null when incomplete. */
function parseResp(buf, i) {
  const eol = buf.indexOf('\r\n', i);
  if (eol < 0) return null;
  const type = String.fromCharCode(buf[i]);
  const line = buf.toString('utf8', i + 1, eol);
  if (type === '+' || type === '-') return { value: type === '-' ? new Error(line) : line, next: eol + 2 };
  if (type === ':') return { value: Number(line), next: eol + 2 };
  if (type === '$') {
    const n = Number(line);
    if (n < 0) return { value: null, next: eol + 2 };
    if (buf.length < eol + 2 + n + 2) return null;
    return { value: buf.toString('utf8', eol + 2, eol + 2 + n), next: eol + 2 + n + 2 };
  }
  if (type === '*') {
    const n = Number(line);
    const out = [];
    let j = eol + 2;
    for (let k = 0; k < n; k++) {
      const r = parseResp(buf, j);
      if (!r) return null;
      out.push(r.value);
      j = r.next;
    }
    return { value: out, next: j };
  }
  throw new Error(`unexpected RESP type ${type}`);
}

const AUTH = { authorization: 'Bearer sk-shared-state-client' };
const user = (text) => ({ role: 'user', content: text });
let seq = 0;
const uniq = (what) => `${what} #${process.pid}-${++seq}-${Date.now()}`;

async function chat(proxy, body, headers = AUTH) {
  const r = await post(proxy.url, '/v1/chat/completions', body, { headers });
  assert.equal(r.status, 200, `chat on ${proxy.url}: ${r.status} ${r.text.slice(0, 300)}`);
  validateChatCompletion(r.json(), 'chat answer');
  return { res: r, dep: r.headers['x-switchyard-deployment'], attempts: Number(r.headers['x-switchyard-attempts']) };
}

async function chatStream(proxy, body, headers = AUTH) {
  const r = await streamRaw(proxy.url, '/v1/chat/completions', { ...body, stream: true }, { headers });
  assert.equal(r.status, 200, `stream: ${r.status} ${r.text.slice(0, 300)}`);
  r.events.filter((e) => e.data !== '[DONE]').forEach((e, i) => validateChatChunk(JSON.parse(e.data), `chunk ${i}`));
  assert.equal(r.events.at(-1)?.data, '[DONE]');
  return { res: r, dep: r.headers['x-switchyard-deployment'] };
}

/** The breaker state of <dep> in <proxy>'s /metrics: 'closed', 'open' or 'half_open'. */
async function breaker(proxy, dep) {
  const r = await request(proxy.url, 'GET', '/metrics');
  assert.equal(r.status, 200);
  const m = r.text.match(new RegExp(`^switchyard_breaker_state\\{deployment="${dep}",state="([a-z_]+)"\\} \\d+$`, 'm'));
  assert.ok(m, `no breaker line for ${dep} in /metrics`);
  return m[1];
}

describe('affinity and circuit breakers shared through Redis', { skip: haveRedis ? false : 'redis-server not installed' }, () => {
  const FAILS = 2;
  const COOLDOWN = 4000; // long enough that B's checks finish while the breaker is open
  let redis;
  let fake;
  let flaky;
  let a;
  let b;

  before(async () => {
    redis = new Redis(await freePort());
    await redis.start();
    fake = await startFake();
    flaky = await startFlaky(fake);
    const cfg = (order) => {
      const dir = routesDir('shared-routes');
      writeRoutes(dir, [
        {
          name: 'conv',
          match: { model: 'conv' },
          tiers: [{ name: 'only', targets: order, strategy: 'ordered' }],
          affinity: 'conversation',
        },
        {
          name: 'br',
          match: { model: 'br' },
          tiers: [{ name: 'only', targets: ['flaky-x', 'good'] }],
          fallback: { on: ['connect', 'timeout', 503], max_attempts: 2 },
        },
      ]);
      return makeConfig({
        routes: dir,
        redis: { url: `redis://127.0.0.1:${redis.port}/0`, timeout_ms: 50 },
        upstream: { retry_base_ms: 5, retry_max_ms: 50, breaker_failures: FAILS, breaker_cooldown_ms: COOLDOWN },
        deployments: [
          fakeDeployment(fake, 'aff-x', { model: 'fake-small' }),
          fakeDeployment(fake, 'aff-y', { model: 'fake-small' }),
          fakeDeployment(fake, 'good'),
          { name: 'flaky-x', provider: 'openai', base_url: flaky.base('x'), model: 'flaky-x', price: { input: 0, output: 0 } },
        ],
      });
    };
    a = await startProxy(cfg(['aff-x', 'aff-y']));
    b = await startProxy(cfg(['aff-y', 'aff-x'])); // B's own strategy prefers aff-y
  });

  after(async () => {
    await assertCleanExit(a);
    await assertCleanExit(b);
    await flaky?.close();
    await fake?.stop();
    await redis?.stop();
  });

  test('a conversation served on A by aff-x goes to aff-x on B', async () => {
    const messages = [{ role: 'system', content: 'You are terse.' }, user(uniq('shared conversation'))];
    const t1 = await chat(a, { model: 'conv', messages });
    assert.equal(t1.dep, 'aff-x', 'A orders aff-x first');
    // A writes the conversation to Redis off its request path: wait until it is there
    let keys = [];
    await waitFor(async () => (keys = await redis.command('KEYS', 'sy:{a:*')).length === 1,
      { timeout: 5000, what: 'the affinity entry in Redis' });
    assert.equal(await redis.command('GET', keys[0]), 'aff-x');
    const ttl = await redis.command('PTTL', keys[0]);
    assert.ok(ttl > 0, `the entry has a TTL (${ttl})`);

    messages.push({ role: 'assistant', content: 'hi' }, user('second turn'));
    const t2 = await chat(b, { model: 'conv', messages });
    assert.equal(t2.dep, 'aff-x', 'B follows the conversation to the deployment that served it on A');
    messages.push({ role: 'assistant', content: 'ok' }, user('third turn, streamed'));
    assert.equal((await chatStream(b, { model: 'conv', messages })).dep, 'aff-x');
    messages.push({ role: 'assistant', content: 'ok' }, user('fourth turn, back on A'));
    assert.equal((await chat(a, { model: 'conv', messages })).dep, 'aff-x');

    // B's own choice for a conversation nobody served yet, and for the same messages under
    // another key (another tenant: another conversation)
    assert.equal((await chat(b, { model: 'conv', messages: [user(uniq('new on B'))] })).dep, 'aff-y');
    const other = { authorization: 'Bearer sk-another-tenant' };
    assert.equal((await chat(b, { model: 'conv', messages }, other)).dep, 'aff-y');
    // ... and a conversation first served on B by aff-y is followed by A in turn
    await waitFor(async () => (await redis.command('KEYS', 'sy:{a:*')).length >= 3,
      { timeout: 5000, what: 'B\'s affinity entries in Redis' });
    const newOnB = [user(uniq('first served on B'))];
    assert.equal((await chat(b, { model: 'conv', messages: newOnB })).dep, 'aff-y');
    await waitFor(async () => (await redis.command('KEYS', 'sy:{a:*')).length >= 4,
      { timeout: 5000, what: 'the new conversation in Redis' });
    newOnB.push({ role: 'assistant', content: 'ok' }, user('next'));
    assert.equal((await chat(a, { model: 'conv', messages: newOnB })).dep, 'aff-y', 'A follows B\'s conversation');
  });

  test('a breaker A opens is honoured by B; a success on B closes it on A', async () => {
    const br = (p) => chat(p, { model: 'br', messages: [user('ping')] });
    assert.equal(await breaker(a, 'flaky-x'), 'closed');
    assert.equal(await breaker(b, 'flaky-x'), 'closed');
    assert.equal((await br(b)).dep, 'flaky-x', 'B sends to flaky-x while it is healthy');

    flaky.modes.x = 'fail';
    const before = flaky.counts.x || 0;
    for (let i = 0; i < FAILS; i++) {
      const r = await br(a);
      assert.equal(r.dep, 'good');
      assert.equal(r.attempts, 2, `failure ${i + 1}: flaky-x tried first on A`);
    }
    const openedAt = Date.now();
    assert.equal(flaky.counts.x, before + FAILS);
    assert.equal(await breaker(a, 'flaky-x'), 'open');
    const rec = await redis.command('GET', 'sy:{cb:flaky-x}:state');
    assert.match(rec ?? '', /^v1 [1-9]\d* [1-9]\d*$/, 'A published the open breaker');

    await waitFor(async () => (await breaker(b, 'flaky-x')) === 'open', { timeout: 5000, what: 'B to see A\'s breaker' });
    const seenAfter = Date.now() - openedAt;
    console.log(`# B saw A's open breaker ${seenAfter} ms after A's last failure answered (breaker_sync_ms 250)`);

    const n = flaky.counts.x;
    for (let i = 0; i < 5; i++) {
      const r = await br(b);
      assert.equal(r.dep, 'good');
      assert.equal(r.attempts, 1, 'B skipped flaky-x without trying it');
    }
    assert.equal(flaky.counts.x, n, 'flaky-x got no request from B while A\'s breaker was open');

    // the deployment recovers; after the cooldown B's probe succeeds and closes it everywhere
    flaky.modes.x = 'ok';
    await waitFor(async () => (await br(b)).dep === 'flaky-x', { timeout: COOLDOWN + 15000, interval: 100, what: 'B\'s probe to succeed' });
    assert.equal(await breaker(b, 'flaky-x'), 'closed');
    const closedAt = Date.now();
    await waitFor(async () => (await breaker(a, 'flaky-x')) === 'closed', { timeout: 5000, what: 'A to see the breaker closed' });
    console.log(`# A saw B's close ${Date.now() - closedAt} ms after B's probe answered`);
    const m = flaky.counts.x;
    const r = await br(a);
    assert.equal(r.dep, 'flaky-x', 'A is back on flaky-x without a probe of its own');
    assert.equal(r.attempts, 1);
    assert.equal(flaky.counts.x, m + 1);
  });

  test('Redis killed: requests succeed on local state, breakers and affinity work locally', async () => {
    const messages = [user(uniq('before the outage'))];
    assert.equal((await chat(a, { model: 'conv', messages })).dep, 'aff-x');
    await waitFor(async () => (await redis.command('KEYS', 'sy:{a:*')).length >= 5, { timeout: 5000, what: 'the entry in Redis' });
    messages.push({ role: 'assistant', content: 'ok' }, user('on B'));
    assert.equal((await chat(b, { model: 'conv', messages })).dep, 'aff-x');

    await redis.kill();
    const health = async (p) => (await request(p.url, 'GET', '/healthz')).json();
    // concurrent traffic on both instances while the store is gone: every request answers 200
    const jobs = [];
    for (let i = 0; i < 24; i++) {
      const p = i % 2 ? a : b;
      const body = i % 3 === 0 ? { model: 'br', messages: [user('ping')] } : { model: 'conv', messages: [user(uniq(`outage ${i}`))] };
      jobs.push(i % 4 === 1 ? chatStream(p, body) : chat(p, body));
    }
    const res = await Promise.all(jobs);
    assert.equal(res.length, 24);
    await waitFor(async () => (await health(a)).status === 'degraded', { timeout: 5000, what: 'A degraded' });
    await waitFor(async () => (await health(b)).status === 'degraded', { timeout: 5000, what: 'B degraded' });

    // both instances remember the conversation locally
    messages.push({ role: 'assistant', content: 'ok' }, user('during the outage'));
    assert.equal((await chat(a, { model: 'conv', messages })).dep, 'aff-x');
    assert.equal((await chat(b, { model: 'conv', messages })).dep, 'aff-x');
    // a new conversation on B: the store lookup fails fast, B's own order serves it
    assert.equal((await chat(b, { model: 'conv', messages: [user(uniq('new during outage'))] })).dep, 'aff-y');

    // a local breaker still opens and is honoured on the instance that saw the failures
    flaky.modes.x = 'fail';
    for (let i = 0; i < FAILS; i++) assert.equal((await chat(a, { model: 'br', messages: [user('ping')] })).dep, 'good');
    assert.equal(await breaker(a, 'flaky-x'), 'open');
    const n = flaky.counts.x;
    const r = await chat(a, { model: 'br', messages: [user('ping')] });
    assert.equal(r.dep, 'good');
    assert.equal(r.attempts, 1);
    assert.equal(flaky.counts.x, n);
    flaky.modes.x = 'ok';
  });
});
