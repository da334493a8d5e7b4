// Spend through the real binary (issue 5, DESIGN §7): every request priced from its usage in exact
// micro-dollars (x-switchyard-cost-usd on non-stream answers), cached and cache-write tokens at
// their rates, the route's reference price as the counterfactual, streams with and without
// include_usage billed alike, a cut stream and a client disconnect billed as estimated, a cache
// hit costing 0 and saving the original cost; /v1/spend totals equal the sum of per-request costs
// exactly; /metrics is valid Prometheus text whose counters match /v1/spend. Durability: SIGKILL
// of the proxy and a Redis outage (killed and restarted) lose nothing acknowledged and count
// nothing twice; a paused Redis (SIGSTOP: store calls hang until their deadline) never holds an
// answer, and after SIGCONT the totals are exact.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import http from 'node:http';
import {
  startFake, startProxy, makeConfig, fakeDeployment, assertCleanExit, post, request, streamRaw,
  chatBody, waitFor, writeConfig,
  freePort, haveRedis, RedisServer,
} from './lib/harness.mjs';
import { routesDir, writeRoutes } from './fixtures/routing.mjs';

const MASTER_ENV = 'SY_SPEND_TEST_MASTER';
const MASTER = 'sk-spend-test-master';
const AUTH = { authorization: `Bearer ${MASTER}` };
const ANTHROPIC_ENV = 'SY_SPEND_TEST_ANTHROPIC_KEY';
const ENV = { [MASTER_ENV]: MASTER, [ANTHROPIC_ENV]: 'sk-ant-fake' };

const PRICES = {
  cheap: { input: 0.15, cached_input: 0.075, output: 0.6, batch_discount: 0.5 },
  flag: { input: 3, cached_input: 0.3, cache_write: 3.75, output: 15, batch_discount: 0.5 },
};

let uniqSeq = 0;
const uniq = (what) => `${what} #${process.pid}-${++uniqSeq}-${Date.now()}`;

/* ------------------------------------------------------------------ money, exactly ---------- */

const pico = (usdPerM) => BigInt(Math.round((usdPerM || 0) * 1e6));
/** The proxy's formula (prices.h): exact sum in pico-dollars, one half-up rounding. */
function costMicro(price, usage) {
  const prompt = BigInt(usage.prompt_tokens || 0);
  const cached = BigInt(usage.prompt_tokens_details?.cached_tokens || 0);
  const write = BigInt(usage.prompt_tokens_details?.cache_write_tokens || 0);
  let out = BigInt(usage.completion_tokens || 0);
  const reasoning = BigInt(usage.completion_tokens_details?.reasoning_tokens || 0);
  if (reasoning > out) out = reasoning;
  let uncached = prompt - cached - write;
  if (uncached < 0n) uncached = 0n;
  const cachedRate = price.cached_input ?? price.input;
  const writeRate = price.cache_write ?? price.input;
  const p = uncached * pico(price.input) + cached * pico(cachedRate) + write * pico(writeRate) + out * pico(price.output);
  return Number((p * 1000000n + 500000000000n) / 1000000000000n);
}
const micro = (usdHeader) => {
  assert.match(usdHeader, /^-?\d+\.\d{6}$/, `x-switchyard-cost-usd ${usdHeader}`);
  return Number(usdHeader.replace('.', ''));
};

/* ------------------------------------------------------------------ /v1/spend ------------- */

function dayUTC(offset = 0) {
  return new Date(Date.now() + offset * 86400000).toISOString().slice(0, 10);
}

async function spend(proxy, query = '') {
  const r = await request(proxy.url, 'GET', `/v1/spend?from=${dayUTC(-1)}&to=${dayUTC(1)}${query}`, { headers: AUTH });
  assert.equal(r.status, 200, r.text);
  return r.json();
}

async function totals(proxy) { return (await spend(proxy)).totals; }

function delta(a, b) {
  const d = {};
  // USD fields are floats derived from integer micro-dollars: a difference of two of them
  // carries float noise, so deltas are rounded back to whole micro-dollars.
  for (const k of Object.keys(b)) {
    if (typeof b[k] !== 'number') continue;
    const v = b[k] - (a[k] || 0);
    d[k] = k.endsWith('_usd') ? Math.round(v * 1e6) / 1e6 : v;
  }
  return d;
}

/** Runs <fn> and returns the change of /v1/spend totals it caused, waiting (with a deadline) for
 *  <requests> new records to appear. */
async function measure(proxy, requests, fn) {
  const before = await totals(proxy);
  const result = await fn();
  let after;
  await waitFor(async () => {
    after = await totals(proxy);
    return after.requests - before.requests >= requests;
  }, { timeout: 15000, what: `${requests} spend record(s)` });
  return { d: delta(before, after), result };
}

/* ------------------------------------------------------------------ Prometheus text ------- */

/** A strict parser of the text exposition format 0.0.4: {families: {name: {type, help, samples}}}. */
function parseProm(text) {
  assert.ok(text.endsWith('\n'), 'exposition ends with a newline');
  const families = {};
  let current = null;
  const famOf = (name) => {
    for (const suf of ['_bucket', '_sum', '_count']) {
      const base = name.endsWith(suf) ? name.slice(0, -suf.length) : null;
      if (base && families[base]?.type === 'histogram') return base;
    }
    return name;
  };
  for (const line of text.slice(0, -1).split('\n')) {
    let m;
    if ((m = line.match(/^# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) (.*)$/))) {
      families[m[1]] = families[m[1]] || { samples: [] };
      families[m[1]].help = m[2];
      continue;
    }
    if ((m = line.match(/^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram|summary|untyped)$/))) {
      assert.ok(!families[m[1]]?.type, `TYPE ${m[1]} given twice`);
      families[m[1]] = families[m[1]] || { samples: [] };
      families[m[1]].type = m[2];
      current = m[1];
      continue;
    }
    assert.ok(!line.startsWith('#'), `unexpected comment: ${line}`);
    m = line.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/);
    assert.ok(m, `not a sample line: ${line}`);
    const labels = {};
    if (m[2] !== undefined) {
      const re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"(,|$)/gy;
      let pos = 0;
      let lm;
      while (pos < m[2].length && (lm = re.exec(m[2]))) {
        assert.ok(!(lm[1] in labels), `label ${lm[1]} repeated: ${line}`);
        labels[lm[1]] = lm[2].replace(/\\(.)/g, (_, c) => (c === 'n' ? '\n' : c));
        pos = re.lastIndex;
      }
      assert.equal(pos, m[2].length, `bad labels: ${line}`);
    }
    const value = Number(m[3] === '+Inf' ? Infinity : m[3]);
    assert.ok(!Number.isNaN(value), `bad value: ${line}`);
    const fam = famOf(m[1]);
    assert.equal(fam, current, `sample ${m[1]} outside its family block`);
    families[fam].samples.push({ name: m[1], labels, value, raw: m[3] });
  }
  for (const [name, f] of Object.entries(families)) {
    if (f.type === 'counter') assert.ok(name.endsWith('_total'), `counter ${name} must end in _total`);
    if (f.type === 'histogram') {
      const series = {};
      for (const s of f.samples.filter((x) => x.name === `${name}_bucket`)) {
        const { le, ...rest } = s.labels;
        const k = JSON.stringify(rest);
        (series[k] = series[k] || []).push([le === '+Inf' ? Infinity : Number(le), s.value]);
      }
      for (const [k, bs] of Object.entries(series)) {
        for (let i = 1; i < bs.length; i++) assert.ok(bs[i][0] > bs[i - 1][0] && bs[i][1] >= bs[i - 1][1], `${name}${k}: buckets not cumulative`);
        assert.equal(bs[bs.length - 1][0], Infinity, `${name}${k}: no +Inf bucket`);
        const count = f.samples.find((x) => x.name === `${name}_count` && JSON.stringify(x.labels) === k);
        assert.equal(count?.value, bs[bs.length - 1][1], `${name}${k}: _count != +Inf bucket`);
      }
    }
  }
  return families;
}

const sumOf = (fam, pred = () => true) => (fam?.samples || []).filter((s) => pred(s.labels)).reduce((a, s) => a + s.value, 0);
/** Sum of a USD counter in exact micro-dollars (each sample printed with six decimals). */
const microOf = (fam) => (fam?.samples || []).reduce((a, s) => a + Number(s.raw.replace('.', '')), 0);

/* Until the relay records spend (src/server.c wires sy_spend into sy_api_in), /v1/spend answers 503:
 * the tests then skip with that reason instead of failing. */
const NOT_WIRED = 'the relay does not record spend yet (/v1/spend answers 503)';
async function wired(proxy) {
  const r = await request(proxy.url, 'GET', '/v1/spend', { headers: AUTH });
  return r.status === 200;
}

/** Starts the proxy on <cfgPath> (pushed to <spawned>); null, after a clean exit of it and of
 *  <others>, when /v1/spend is not wired. */
async function startWired(cfgPath, spawned, ...others) {
  const proxy = await startProxy(cfgPath, { env: ENV });
  spawned.push(proxy);
  if (await wired(proxy)) return proxy;
  await assertCleanExit(proxy);
  for (const o of others) await assertCleanExit(o);
  return null;
}

/* ------------------------------------------------------------------ fixtures ---------------- */

function spendRoutes() {
  const dir = routesDir('spend-routes');
  writeRoutes(dir, [
    { name: 'saver', match: { model: 'saver' }, tiers: [{ name: 'local', targets: ['cheap'] }], reference: 'flag' },
    { name: 'cached', match: { model: 'cached' }, tiers: [{ name: 'local', targets: ['cheap'] }],
      cache: { mode: 'always', ttl_s: 600 }, reference: 'flag' },
    { name: 'claude', match: { model: 'claude' }, tiers: [{ name: 'flagship', targets: ['claude'] }], reference: 'claude' },
    { name: 'direct', match: { model: '*' }, target: 'by_model_name' },
  ]);
  return dir;
}

function spendConfig(fake, extra = {}) {
  return makeConfig({
    auth: { master_key_env: MASTER_ENV },
    routes: spendRoutes(),
    deployments: [
      fakeDeployment(fake, 'cheap', { model: 'fake-small', price: PRICES.cheap }),
      fakeDeployment(fake, 'cut', { model: 'fake-small', price: PRICES.cheap, directives: { drop_after: 2, usage: 0 } }),
      fakeDeployment(fake, 'slow', { model: 'fake-small', price: PRICES.cheap, directives: { chunks: 400, interval_ms: 20 } }),
      fakeDeployment(fake, 'flag', { model: 'fake-large', price: PRICES.flag }),
      {
        name: 'claude', provider: 'anthropic', base_url: fake.base({ cache_read: 1000, cache_write: 200 }),
        model: 'claude-sonnet-4-5', api_key_env: ANTHROPIC_ENV, price: PRICES.flag,
      },
    ],
    ...extra,
  });
}

/* ------------------------------------------------------------------ embedded store -------- */

describe('spend, embedded store', () => {
  let fake;
  let proxy;
  let on = false;

  before(async () => {
    fake = await startFake();
    proxy = await startProxy(spendConfig(fake), { env: ENV });
    on = await wired(proxy);
  });
  after(async () => {
    await assertCleanExit(proxy);
    await assertCleanExit(fake);
  });

  test('/v1/spend needs the master key; bad parameters are 400 OpenAI errors', async (t) => {
    if (!on) return t.skip(NOT_WIRED);
    let r = await request(proxy.url, 'GET', '/v1/spend');
    assert.equal(r.status, 401);
    assert.equal(r.json().error.type, 'authentication_error');
    r = await request(proxy.url, 'GET', '/metrics');
    assert.equal(r.status, 401);
    for (const [q, param] of [['from=2025-02-30', 'from'], ['to=tomorrow', 'to'], ['group_by=route,color', 'group_by'],
      ['from=2025-03-01&to=2025-02-01', 'from'], ['from=2020-01-01&to=2025-01-01', 'from']]) {
      r = await request(proxy.url, 'GET', `/v1/spend?${q}`, { headers: AUTH });
      assert.equal(r.status, 400, q);
      assert.equal(r.json().error.type, 'invalid_request_error', q);
      assert.equal(r.json().error.param, param, q);
    }
    const s = await spend(proxy, '&group_by=day,route,tier,deployment,model,key');
    assert.equal(s.object, 'spend');
    assert.deepEqual(s.group_by, ['day', 'route', 'tier', 'deployment', 'model', 'key']);
    for (const k of ['requests', 'errors', 'prompt_tokens', 'cached_tokens', 'completion_tokens', 'reasoning_tokens',
      'cost_usd', 'counterfactual_usd', 'savings_usd', 'cache_hits', 'estimated']) assert.equal(typeof s.totals[k], 'number', k);
  });

  test('non-stream: x-switchyard-cost-usd is the exact price of the usage; the reference is the counterfactual', async (t) => {
    if (!on) return t.skip(NOT_WIRED);
    const { d, result } = await measure(proxy, 1, () => post(proxy.url, '/v1/chat/completions', chatBody('saver', uniq('price me'))));
    const r = result;
    assert.equal(r.status, 200, r.text);
    const usage = r.json().usage;
    const want = costMicro(PRICES.cheap, usage);
    assert.equal(micro(r.headers['x-switchyard-cost-usd']), want);
    assert.equal(d.requests, 1);
    assert.equal(d.cost_micro, want);
    assert.equal(d.counterfactual_micro, costMicro(PRICES.flag, usage));
    assert.equal(d.savings_micro, costMicro(PRICES.flag, usage) - want);
    assert.equal(d.prompt_tokens, usage.prompt_tokens);
    assert.equal(d.completion_tokens, usage.completion_tokens);
    assert.equal(d.estimated, 0);
    // the USD numbers are the exact decimals of the integers
    const s = await spend(proxy);
    assert.equal(Math.round(s.totals.cost_usd * 1e6), s.totals.cost_micro);
    assert.equal(String(s.totals.cost_usd), (s.totals.cost_micro / 1e6).toString());
  });

  test('cached and cache-write tokens are priced at their rates (Anthropic prompt caching)', async (t) => {
    if (!on) return t.skip(NOT_WIRED);
    const { d, result: r } = await measure(proxy, 1, () => post(proxy.url, '/v1/chat/completions', chatBody('claude', uniq('cache me'))));
    assert.equal(r.status, 200, r.text);
    const usage = r.json().usage;
    assert.equal(usage.prompt_tokens_details.cached_tokens, 1000);
    assert.equal(usage.prompt_tokens_details.cache_write_tokens, 200);
    const want = costMicro(PRICES.flag, usage);
    assert.equal(micro(r.headers['x-switchyard-cost-usd']), want);
    assert.equal(d.cost_micro, want);
    assert.equal(d.cached_tokens, 1000);
    assert.equal(d.cache_write_tokens, 200);
    // at the plain input rate it would cost more: the discount is really applied
    assert.ok(want < costMicro({ ...PRICES.flag, cached_input: 3, cache_write: 3 }, usage));
  });

  test('streams: the client sees usage only when it asked; the spend is the same either way', async (t) => {
    if (!on) return t.skip(NOT_WIRED);
    const body = (extra) => chatBody('saver', 'stream me the same thing', { stream: true, ...extra });
    const withUsage = await measure(proxy, 1, () => streamRaw(proxy.url, '/v1/chat/completions', body({ stream_options: { include_usage: true } })));
    const without = await measure(proxy, 1, () => streamRaw(proxy.url, '/v1/chat/completions', body({})));
    const chunks = (res) => res.events.filter((e) => e.data !== '[DONE]').map((e) => JSON.parse(e.data));
    const a = chunks(withUsage.result);
    const b = chunks(without.result);
    const usageChunk = a.find((c) => c.usage && c.choices.length === 0);
    assert.ok(usageChunk, 'include_usage: a usage chunk');
    assert.ok(!b.some((c) => c.usage), 'no include_usage: no usage anywhere');
    for (const d of [withUsage.d, without.d]) {
      assert.equal(d.requests, 1);
      assert.equal(d.estimated, 0);
    }
    assert.equal(withUsage.d.cost_micro, costMicro(PRICES.cheap, usageChunk.usage));
    assert.deepEqual(without.d, withUsage.d);
  });

  test('a stream cut mid-way without usage is billed as estimated', async (t) => {
    if (!on) return t.skip(NOT_WIRED);
    const { d } = await measure(proxy, 1, () => streamRaw(proxy.url, '/v1/chat/completions',
      chatBody('cut', uniq('cut me'), { stream: true })).catch((e) => e));
    assert.equal(d.requests, 1);
    assert.equal(d.estimated, 1);
    assert.ok(d.completion_tokens > 0, 'what was generated is counted');
    assert.ok(d.prompt_tokens > 0);
    assert.ok(d.cost_micro >= 0);
  });

  test('a client that disconnects mid-stream is billed for what was generated', async (t) => {
    if (!on) return t.skip(NOT_WIRED);
    const { d } = await measure(proxy, 1, () => streamRaw(proxy.url, '/v1/chat/completions',
      chatBody('slow', uniq('leave early'), { stream: true }), {
        onEvent: (ev, req) => { if (ev.data.includes('"content"') && !ev.data.includes('"content":""')) req.destroy(); },
      }).catch((e) => e));
    assert.equal(d.requests, 1);
    assert.ok(d.completion_tokens > 0 && d.completion_tokens < 400, `completion ${d.completion_tokens}`);
  });

  test('a cache hit costs 0 and saves the whole original cost', async (t) => {
    if (!on) return t.skip(NOT_WIRED);
    const body = chatBody('cached', uniq('same question'));
    const miss = await measure(proxy, 1, () => post(proxy.url, '/v1/chat/completions', body));
    assert.equal(miss.result.status, 200);
    const original = micro(miss.result.headers['x-switchyard-cost-usd']);
    assert.ok(original > 0);
    const hit = await measure(proxy, 1, () => post(proxy.url, '/v1/chat/completions', body));
    assert.equal(hit.result.status, 200);
    assert.equal(hit.result.headers['x-switchyard-cache'], 'hit');
    assert.equal(micro(hit.result.headers['x-switchyard-cost-usd']), 0);
    assert.equal(hit.d.cost_micro, 0);
    assert.equal(hit.d.cache_hits, 1);
    assert.equal(hit.d.savings_micro, original);
  });

  test('totals equal the sum of per-request costs exactly; grouping adds up', async (t) => {
    if (!on) return t.skip(NOT_WIRED);
    const before = await totals(proxy);
    const results = await Promise.all(Array.from({ length: 24 }, (_, i) =>
      post(proxy.url, '/v1/chat/completions', chatBody(['saver', 'claude', 'cheap', 'flag'][i % 4], uniq(`sum ${'x'.repeat(i * 7)}`)))));
    let sum = 0;
    for (const r of results) {
      assert.equal(r.status, 200, r.text);
      sum += micro(r.headers['x-switchyard-cost-usd']);
    }
    let after;
    await waitFor(async () => { after = await totals(proxy); return after.requests - before.requests >= 24; },
      { what: '24 records' });
    assert.equal(after.requests - before.requests, 24);
    assert.equal(after.cost_micro - before.cost_micro, sum);
    for (const g of ['route', 'deployment', 'day,route,tier,deployment,model,key', 'tier,model']) {
      const s = await spend(proxy, `&group_by=${g}`);
      const rows = s.rows;
      for (const k of ['requests', 'cost_micro', 'counterfactual_micro', 'prompt_tokens', 'completion_tokens'])
        assert.equal(rows.reduce((a, r) => a + r[k], 0), s.totals[k], `${g}: rows add up to the totals (${k})`);
      for (const r of rows) for (const dim of g.split(',')) assert.equal(typeof r[dim], 'string', `${g}: row has ${dim}`);
    }
    const byDep = await spend(proxy, '&group_by=deployment');
    assert.ok(byDep.rows.some((r) => r.deployment === 'claude'));
  });

  test('/metrics is valid Prometheus text and its counters match /v1/spend', async (t) => {
    if (!on) return t.skip(NOT_WIRED);
    const r = await request(proxy.url, 'GET', '/metrics', { headers: AUTH });
    assert.equal(r.status, 200);
    assert.match(r.headers['content-type'], /^text\/plain; version=0\.0\.4/);
    const fams = parseProm(r.text);
    const promtool = spawnSync('promtool', ['check', 'metrics'], { input: r.text, encoding: 'utf8' });
    if (!promtool.error) assert.equal(promtool.status, 0, `promtool: ${promtool.stdout}${promtool.stderr}`);
    for (const f of ['switchyard_requests_total', 'switchyard_errors_total', 'switchyard_tokens_total',
      'switchyard_cost_usd_total', 'switchyard_counterfactual_usd_total', 'switchyard_savings_usd',
      'switchyard_cache_hits_total', 'switchyard_cache_misses_total', 'switchyard_upstream_latency_seconds',
      'switchyard_ttft_seconds', 'switchyard_inflight_requests', 'switchyard_breaker_state', 'switchyard_store_up']) {
      assert.ok(fams[f], `family ${f}`);
    }
    const s = await totals(proxy); // after the metrics: no request runs in between
    assert.equal(sumOf(fams.switchyard_requests_total), s.requests);
    assert.equal(sumOf(fams.switchyard_errors_total), s.errors);
    assert.equal(microOf(fams.switchyard_cost_usd_total), s.cost_micro);
    assert.equal(microOf(fams.switchyard_counterfactual_usd_total), s.counterfactual_micro);
    assert.equal(microOf(fams.switchyard_savings_usd), s.savings_micro);
    assert.equal(sumOf(fams.switchyard_tokens_total, (l) => l.kind === 'prompt'), s.prompt_tokens);
    assert.equal(sumOf(fams.switchyard_tokens_total, (l) => l.kind === 'cached'), s.cached_tokens);
    assert.equal(sumOf(fams.switchyard_tokens_total, (l) => l.kind === 'completion'), s.completion_tokens);
    assert.equal(sumOf(fams.switchyard_cache_hits_total), s.cache_hits);
    assert.equal(sumOf(fams.switchyard_estimated_usage_total), s.estimated);
    assert.equal(sumOf(fams.switchyard_store_up), 1);
    const deps = fams.switchyard_breaker_state.samples.map((x) => x.labels.deployment).sort();
    assert.deepEqual(deps, ['cheap', 'claude', 'cut', 'flag', 'slow']);
  });
});

/* ------------------------------------------------------------------ durability ----------- */

/** Runs <fn>(spawned) and SIGKILLs whatever it spawned that still runs when it throws, so a
 *  failed assertion never leaves a child process holding the test file open until its timeout. */
async function withCleanup(fn) {
  const spawned = [];
  try {
    return await fn(spawned);
  } finally {
    for (const p of spawned) if (!p.exited) p.kill();
  }
}

/** Sequential non-stream requests; returns the sum of their x-switchyard-cost-usd. */
async function acknowledged(proxy, n, model = 'saver') {
  let sum = 0;
  for (let i = 0; i < n; i++) {
    const r = await post(proxy.url, '/v1/chat/completions', chatBody(model, uniq(`ack ${i} ${'y'.repeat(i % 13)}`)));
    assert.equal(r.status, 200, r.text);
    sum += micro(r.headers['x-switchyard-cost-usd']);
  }
  return sum;
}

/** The proxy's tenant of an Authorization header (api_relay.c: the first 128 bits of its
 *  SHA-256), the "key" dimension. */
function tenantOf(authorization) {
  return `k:${crypto.createHash('sha256').update(authorization).digest('hex').slice(0, 32)}`;
}

/** <n> concurrent requests, each under its own key (so each is its own /v1/spend row), every
 *  third one a stream with include_usage. The proxy is SIGKILLed the moment the <killAt>-th answer
 *  is acknowledged to its client: a non-stream body received whole, or a stream's [DONE] event
 *  (clients such as the Python SDK stop reading there). Every answer acknowledged, before or
 *  after the kill was sent, is returned as key -> its cost in micro-dollars (header, or the
 *  stream's usage priced like the proxy does); <keys> are all the keys used. */
async function burstThenKill(proxy, n, killAt, round) {
  const acked = new Map();
  const keys = [];
  let seen = 0;
  const ack = (key, cost) => {
    acked.set(key, cost);
    if (++seen === killAt) proxy.kill(); // synchronously, in the callback that saw the answer
  };
  const runs = Array.from({ length: n }, (_, i) => {
    const auth = `Bearer sk-burst-${process.pid}-${round}-${i}`;
    const key = tenantOf(auth);
    keys.push(key);
    const text = uniq(`burst ${round}/${i} ${'z'.repeat(i % 17)}`);
    if (i % 3 === 2) {
      let usage = null;
      return streamRaw(proxy.url, '/v1/chat/completions',
        chatBody('saver', text, { stream: true, stream_options: { include_usage: true } }), {
          headers: { authorization: auth },
          onEvent: (ev) => {
            if (ev.data === '[DONE]') ack(key, costMicro(PRICES.cheap, usage));
            else if (ev.data.startsWith('{')) usage = JSON.parse(ev.data).usage || usage;
          },
        }).catch(() => null); // cut by the kill before [DONE]: not acknowledged
    }
    return post(proxy.url, '/v1/chat/completions', chatBody('saver', text), { headers: { authorization: auth } })
      .then((r) => { if (r.status === 200) ack(key, micro(r.headers['x-switchyard-cost-usd'])); },
        () => null); // cut by the kill: not acknowledged
  });
  await Promise.all(runs);
  proxy.kill(); // when fewer than <killAt> made it (should not happen)
  await proxy.exitPromise;
  assert.ok(seen >= killAt, `only ${seen} of ${n} answers before the kill`);
  return { acked, keys };
}

/** After a restart: every acknowledged answer of a burst is in /v1/spend exactly once with its
 *  exact cost; the others are there at most once. Returns the burst's {requests, cost_micro}. */
async function checkBurst(proxy, { acked, keys }) {
  const rows = new Map((await spend(proxy, '&group_by=key')).rows.map((r) => [r.key, r]));
  let requests = 0;
  let cost = 0;
  for (const key of keys) {
    const row = rows.get(key);
    if (acked.has(key)) {
      assert.ok(row, `an acknowledged answer (key ${key}) is missing after SIGKILL`);
      assert.equal(row.cost_micro, acked.get(key), `cost of ${key}`);
    }
    if (row) {
      assert.equal(row.requests, 1, `${key} counted once`);
      requests += 1;
      cost += row.cost_micro;
    }
  }
  return { requests, cost_micro: cost };
}

/** An OpenAI-compatible upstream whose streams end <lingerMs> after their [DONE] (real servers
 *  close when they like; the fake ends at once). Usage: prompt 11, completion 7. */
async function startLingering(lingerMs) {
  const server = http.createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      const chunk = (choices, extra = {}) => `data: ${JSON.stringify({
        id: 'chatcmpl-linger', object: 'chat.completion.chunk', created: 1700000000, model: 'fake-small', choices, ...extra,
      })}\n\n`;
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write(chunk([{ index: 0, delta: { role: 'assistant', content: '' }, finish_reason: null }]));
      res.write(chunk([{ index: 0, delta: { content: 'Hello, lingering' }, finish_reason: null }]));
      res.write(chunk([{ index: 0, delta: {}, finish_reason: 'stop' }]));
      res.write(chunk([], { usage: { prompt_tokens: 11, completion_tokens: 7, total_tokens: 18 } }));
      res.write('data: [DONE]\n\n');
      setTimeout(() => res.end(), lingerMs);
    });
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return { server, base: `http://127.0.0.1:${server.address().port}/v1` };
}

describe('spend survives SIGKILL (embedded store, journal only)', () => {
  test('a stream\'s [DONE] reaches the client only after its spend is journaled', (tc) => withCleanup(async (spawned) => {
    const fake = await startFake();
    spawned.push(fake);
    const up = await startLingering(400);
    try {
      const cfg = spendConfig(fake);
      cfg.deployments.push({ name: 'linger', provider: 'openai', base_url: up.base, model: 'fake-small', price: PRICES.cheap });
      const cfgPath = writeConfig(cfg);
      let proxy = await startWired(cfgPath, spawned, fake);
      if (proxy === null) return tc.skip(NOT_WIRED);
      const auth = `Bearer sk-linger-${process.pid}`;
      let usage = null;
      let done = false;
      const res = await streamRaw(proxy.url, '/v1/chat/completions',
        chatBody('linger', uniq('linger'), { stream: true, stream_options: { include_usage: true } }), {
          headers: { authorization: auth },
          onEvent: (ev) => {
            if (ev.data === '[DONE]') {
              done = true;
              proxy.kill(); // the client has its whole answer: SIGKILL at once
            } else if (ev.data.startsWith('{')) {
              usage = JSON.parse(ev.data).usage || usage;
            }
          },
        }).catch((e) => e);
      await proxy.exitPromise;
      assert.ok(done, `no [DONE] before the kill: ${res?.message || res?.text}`);
      assert.deepEqual(usage, { prompt_tokens: 11, completion_tokens: 7, total_tokens: 18 });
      proxy = await startProxy(cfgPath, { env: ENV });
      spawned.push(proxy);
      const row = (await spend(proxy, '&group_by=key')).rows.find((r) => r.key === tenantOf(auth));
      assert.ok(row, 'the stream whose [DONE] the client saw is in /v1/spend after SIGKILL');
      assert.equal(row.requests, 1);
      assert.equal(row.estimated, 0);
      assert.equal(row.cost_micro, costMicro(PRICES.cheap, usage));
      await assertCleanExit(proxy);
      await assertCleanExit(fake);
    } finally {
      up.server.closeAllConnections?.();
      up.server.close();
    }
  }));

  // A relayed answer's last byte (a whole non-stream body, a stream's [DONE] and end) reaches
  // the client only once its spend record is in the journal (sy_spend_record_ack), so a SIGKILL
  // right after an answer loses nothing the client has.
  test('every acknowledged request is counted once after a restart', (tc) => withCleanup(async (spawned) => {
    const fake = await startFake();
    spawned.push(fake);
    const cfgPath = writeConfig(spendConfig(fake));
    let proxy = await startWired(cfgPath, spawned, fake);
    if (proxy === null) return tc.skip(NOT_WIRED);
    let want = await acknowledged(proxy, 15);
    proxy.kill(); // SIGKILL right after the last answer
    await proxy.exitPromise;
    proxy = await startProxy(cfgPath, { env: ENV });
    spawned.push(proxy);
    let t = await totals(proxy);
    assert.equal(t.requests, 15);
    assert.equal(t.cost_micro, want);
    want += await acknowledged(proxy, 5);
    proxy.kill();
    await proxy.exitPromise;
    proxy = await startProxy(cfgPath, { env: ENV });
    spawned.push(proxy);
    t = await totals(proxy);
    assert.equal(t.requests, 20);
    assert.equal(t.cost_micro, want);
    // concurrent answers, killed while half of them are still in flight
    let requests = 20;
    for (let round = 0; round < 3; round++) {
      const burst = await burstThenKill(proxy, 30, 15, round);
      proxy = await startProxy(cfgPath, { env: ENV });
      spawned.push(proxy);
      const got = await checkBurst(proxy, burst);
      requests += got.requests;
      want += got.cost_micro;
      t = await totals(proxy);
      assert.equal(t.requests, requests);
      assert.equal(t.cost_micro, want);
    }
    await assertCleanExit(proxy);
    // a clean stop and start: still exactly once
    proxy = await startProxy(cfgPath, { env: ENV });
    spawned.push(proxy);
    t = await totals(proxy);
    assert.equal(t.requests, requests);
    assert.equal(t.cost_micro, want);
    await assertCleanExit(proxy);
    await assertCleanExit(fake);
  }));
});

/* ------------------------------------------------------------------ Redis ----------------- */


describe('spend on Redis', { skip: haveRedis ? false : 'redis-server not installed' }, () => {
  let fake;
  let redis;
  before(async () => {
    fake = await startFake();
    redis = new RedisServer(await freePort(), { dirPrefix: 'redis-spend-', durable: true });
    await redis.start();
  });
  after(async () => {
    await redis?.stop();
    await assertCleanExit(fake);
  });

  test('Redis killed mid-run and restarted: no loss, no double count', (tc) => withCleanup(async (spawned) => {
    const cfgPath = writeConfig(spendConfig(fake, { redis: { url: `redis://127.0.0.1:${redis.port}`, timeout_ms: 300 } }));
    const proxy = await startWired(cfgPath, spawned);
    if (proxy === null) return tc.skip(NOT_WIRED);
    let want = await acknowledged(proxy, 10);
    await waitFor(async () => (await totals(proxy)).cost_micro === want, { what: 'spend in Redis' });
    await redis.kill();
    want += await acknowledged(proxy, 10); // served while Redis is down: journaled
    let r = await request(proxy.url, 'GET', `/v1/spend?from=${dayUTC(-1)}&to=${dayUTC(1)}`, { headers: AUTH });
    assert.equal(r.status, 503, 'the spend store is down');
    await redis.start();
    want += await acknowledged(proxy, 5);
    await waitFor(async () => {
      r = await request(proxy.url, 'GET', `/v1/spend?from=${dayUTC(-1)}&to=${dayUTC(1)}`, { headers: AUTH });
      return r.status === 200 && r.json().totals.requests === 25;
    }, { timeout: 20000, what: 'the journal replayed into Redis' });
    const t = r.json().totals;
    assert.equal(t.cost_micro, want);
    // and it stays that way (nothing applied twice by later flushes)
    await new Promise((res) => setTimeout(res, 1500));
    assert.equal((await totals(proxy)).cost_micro, want);
    await assertCleanExit(proxy);
  }));

  test('proxy SIGKILLed with Redis up: a restart counts everything exactly once', (tc) => withCleanup(async (spawned) => {
    const cfgPath = writeConfig(spendConfig(fake, { redis: { url: `redis://127.0.0.1:${redis.port}`, timeout_ms: 300 } }));
    let proxy = await startWired(cfgPath, spawned);
    if (proxy === null) return tc.skip(NOT_WIRED);
    const base = await totals(proxy);
    const want = await acknowledged(proxy, 12);
    proxy.kill();
    await proxy.exitPromise;
    proxy = await startProxy(cfgPath, { env: ENV });
    spawned.push(proxy);
    let t;
    await waitFor(async () => { t = await totals(proxy); return t.requests - base.requests >= 12; }, { what: 'replay' });
    assert.equal(t.requests - base.requests, 12);
    assert.equal(t.cost_micro - base.cost_micro, want);
    // concurrent answers, killed while half of them are still in flight
    let requests = t.requests;
    let cost = t.cost_micro;
    for (let round = 0; round < 2; round++) {
      const burst = await burstThenKill(proxy, 30, 15, `redis-${round}`);
      proxy = await startProxy(cfgPath, { env: ENV });
      spawned.push(proxy);
      let got;
      await waitFor(async () => { got = await checkBurst(proxy, burst); return true; },
        { what: 'the burst replayed into Redis' });
      requests += got.requests;
      cost += got.cost_micro;
      await waitFor(async () => { t = await totals(proxy); return t.requests === requests; }, { what: 'replay' });
      assert.equal(t.cost_micro, cost);
    }
    await assertCleanExit(proxy);
  }));

  // A store call against a paused Redis hangs until the store's timeout_ms, here 60 s: longer
  // than any answer below is given (20 s). The spend store thread starts a write within flush_ms
  // (1 s) of the first record made while paused and hangs in it; answers must keep coming, since
  // each one's last byte waits only for its record's journal ack, never for the store.
  test('Redis paused (SIGSTOP, not killed): answers never wait for it; after SIGCONT the totals are exact', (tc) => withCleanup(async (spawned) => {
    const cfgPath = writeConfig(spendConfig(fake, { redis: { url: `redis://127.0.0.1:${redis.port}`, timeout_ms: 60000 } }));
    const proxy = await startWired(cfgPath, spawned);
    if (proxy === null) return tc.skip(NOT_WIRED);
    const base = await totals(proxy);
    const ANSWER_MS = 20000;
    const nonStream = async (what) => {
      const t0 = performance.now();
      const r = await post(proxy.url, '/v1/chat/completions', chatBody('saver', uniq(what)), { timeout: ANSWER_MS });
      const ms = performance.now() - t0;
      assert.equal(r.status, 200, r.text);
      return { ms, cost: micro(r.headers['x-switchyard-cost-usd']) };
    };
    const stream = async (what) => {
      let usage = null;
      let done = false;
      await streamRaw(proxy.url, '/v1/chat/completions',
        chatBody('saver', uniq(what), { stream: true, stream_options: { include_usage: true } }), {
          timeout: ANSWER_MS,
          onEvent: (ev) => {
            if (ev.data === '[DONE]') done = true;
            else if (ev.data.startsWith('{')) usage = JSON.parse(ev.data).usage || usage;
          },
        });
      assert.ok(done && usage, 'the stream ended with its usage and [DONE]');
      return costMicro(PRICES.cheap, usage);
    };
    const metric = async (name) => {
      const r = await request(proxy.url, 'GET', '/metrics', { headers: AUTH, timeout: ANSWER_MS });
      assert.equal(r.status, 200, r.text);
      return sumOf(parseProm(r.text)[name]);
    };
    const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

    let want = 0;
    let requests = 0;
    const healthy = [];
    for (let i = 0; i < 15; i++) {
      const a = await nonStream(`healthy ${i}`);
      healthy.push(a.ms);
      want += a.cost;
      requests++;
    }
    const errorsBefore = await metric('switchyard_spend_store_errors_total');
    const paused = [];
    redis.pause();
    try {
      // non-streams one after another and streams alongside, for longer than flush_ms, so the
      // store thread is inside its hung write for most of them
      const until = Date.now() + 3000;
      const streams = (async () => {
        let cost = 0;
        let n = 0;
        for (let round = 0; Date.now() < until || round < 2; round++) {
          const got = await Promise.all([0, 1, 2].map((k) => stream(`paused stream ${round}/${k}`)));
          cost += got.reduce((a, c) => a + c, 0);
          n += got.length;
        }
        return { cost, n };
      })();
      for (let i = 0; Date.now() < until || i < 15; i++) {
        const a = await nonStream(`paused ${i}`);
        paused.push(a.ms);
        want += a.cost;
        requests++;
      }
      const st = await streams;
      want += st.cost;
      requests += st.n;
      // still paused: no spend store write has come back (none can succeed), the spend waits in
      // memory and in the journal
      assert.equal(await metric('switchyard_spend_store_errors_total'), errorsBefore);
      assert.ok(await metric('switchyard_spend_pending_groups') > 0, 'spend pending while Redis is paused');
    } finally {
      redis.resume();
    }
    let t;
    await waitFor(async () => { t = await totals(proxy); return t.requests - base.requests >= requests; },
      { timeout: 30000, what: 'the spend held while Redis was paused to reach it' });
    assert.equal(t.requests - base.requests, requests);
    assert.equal(t.cost_micro - base.cost_micro, want);
    // and it stays that way (nothing applied twice by later flushes)
    await new Promise((res) => setTimeout(res, 1500));
    t = await totals(proxy);
    assert.equal(t.requests - base.requests, requests);
    assert.equal(t.cost_micro - base.cost_micro, want);
    const h = median(healthy);
    const p = median(paused);
    tc.diagnostic(`non-stream median latency: Redis healthy ${h.toFixed(2)} ms (${healthy.length}), ` +
      `paused ${p.toFixed(2)} ms (${paused.length}); ratio ${(p / h).toFixed(2)}`);
    await assertCleanExit(proxy);
  }));
});
