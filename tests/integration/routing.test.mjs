// Routing through the real binary (DESIGN §5): each rule kind forces its tier; the classifier
// threshold splits traffic exactly as `switchyard route` predicts; target_flagship_share
// converges to its share; failover on 503 and first-byte timeouts, within and across tiers, as
// the route's fallback policy says; the circuit breaker opens, skips the deployment, probes after
// the cooldown (a failed probe re-opens it) and recovers; conversation affinity holds a
// conversation on one deployment of a weighted tier.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startFake, startProxy, makeConfig, fakeDeployment, assertCleanExit, post, streamRaw, writeConfig, errorOf, delay,
  waitFor,
} from './lib/harness.mjs';
import { validateChatCompletion, validateError } from './lib/schema.mjs';
import { WEIGHTS, routesDir, writeRoutes, routeCli, startFlaky } from './fixtures/routing.mjs';
import { promptBodies } from './fixtures/prompts.mjs';

const user = (content) => ({ role: 'user', content });
const body = (model, text, extra = {}) => ({ model, messages: [user(text)], ...extra });

/** Runs <n> async jobs with at most <width> in flight; returns their results in order. */
async function pool(n, width, job) {
  const out = new Array(n);
  let next = 0;
  await Promise.all(Array.from({ length: Math.min(width, n) }, async () => {
    while (next < n) {
      const i = next++;
      out[i] = await job(i);
    }
  }));
  return out;
}

const weatherTool = {
  type: 'function',
  function: { name: 'get_weather', parameters: { type: 'object', properties: { location: { type: 'string' } } } },
};

describe('routes, rules, classifier, failover, affinity', () => {
  let fake;
  let proxy;
  let config;
  let splitThreshold;
  const splitBodies = promptBodies('split', 60, 3);

  const rulesRoute = {
    name: 'rules',
    match: { model: 'rules' },
    rules: [
      { when: { has_tools: true }, tier: 'flagship' },
      { when: { has_images: true }, tier: 'flagship' },
      { when: { prompt_tokens_over: 200 }, tier: 'flagship' },
      { when: { turns_over: 2 }, tier: 'mid' },
      { when: { last_user_matches: '(?i)\\b(prove|derive)\\b' }, tier: 'flagship' },
      { when: { header_equals: { 'X-Plan': 'premium' } }, tier: 'flagship' },
      { when: { response_format: 'json' }, tier: 'mid' },
    ],
    tiers: [
      { name: 'local', targets: ['local-a'] },
      { name: 'mid', targets: ['mid-a'] },
      { name: 'flagship', targets: ['flag-a'] },
    ],
  };
  const routes = (threshold) => [
    rulesRoute,
    {
      name: 'split',
      match: { model: 'split' },
      classifier: { weights: WEIGHTS, threshold },
      tiers: [{ name: 'local', targets: ['local-b'] }, { name: 'flagship', targets: ['flag-b'] }],
    },
    {
      name: 'share',
      match: { model: 'share' },
      classifier: { weights: WEIGHTS, target_flagship_share: 0.3, window: 100 },
      tiers: [{ name: 'local', targets: ['local-a'] }, { name: 'flagship', targets: ['flag-a'] }],
    },
    {
      name: 'failover',
      match: { model: 'failover' },
      tiers: [{ name: 'local', targets: ['bad503', 'local-a'] }, { name: 'flagship', targets: ['flag-a'] }],
      fallback: { on: ['connect', 'timeout', 503], max_attempts: 3 },
    },
    {
      name: 'failover-tier',
      match: { model: 'failover-tier' },
      tiers: [{ name: 'local', targets: ['bad503'] }, { name: 'flagship', targets: ['flag-b'] }],
    },
    {
      name: 'failover-timeout',
      match: { model: 'failover-timeout' },
      tiers: [{ name: 'local', targets: ['staller', 'local-b'] }],
      fallback: { on: ['timeout'] },
    },
    {
      name: 'no-503-fallback',
      match: { model: 'no-503-fallback' },
      tiers: [{ name: 'local', targets: ['bad503', 'local-a'] }],
      fallback: { on: ['connect', 'timeout', 502] },
    },
    {
      name: 'one-attempt',
      match: { model: 'one-attempt' },
      tiers: [{ name: 'local', targets: ['bad503', 'local-a'] }],
      fallback: { max_attempts: 1 },
    },
    {
      name: 'affinity',
      match: { model: 'affinity' },
      tiers: [{ name: 'pool', targets: ['w1', 'w2', 'w3'], strategy: 'weighted' }],
      affinity: 'conversation',
    },
    {
      name: 'aff-rules',
      match: { model: 'aff-rules' },
      rules: [{ when: { has_images: true }, tier: 'flagship' }],
      tiers: [{ name: 'local', targets: ['local-a', 'local-b'] }, { name: 'flagship', targets: ['flag-a', 'flag-b'] }],
      affinity: 'conversation',
    },
    {
      name: 'no-affinity',
      match: { model: 'no-affinity' },
      tiers: [{ name: 'pool', targets: ['w1', 'w2', 'w3'], strategy: 'weighted' }],
    },
    { name: 'direct', match: { model: '*' }, target: 'by_model_name' },
  ];

  before(async () => {
    fake = await startFake({ threads: 2 });
    const dir = routesDir();
    writeRoutes(dir, routes(0.5));
    config = writeConfig(makeConfig({
      routes: dir,
      upstream: { retry_base_ms: 10, retry_max_ms: 200, breaker_failures: 1000 },
      deployments: [
        ...['local-a', 'local-b', 'mid-a', 'flag-a', 'flag-b', 'w1', 'w2', 'w3'].map((n) => fakeDeployment(fake, n)),
        fakeDeployment(fake, 'bad503', { directives: { status: 503 } }),
        fakeDeployment(fake, 'staller', { directives: { stall: 1 }, first_byte_timeout_ms: 300 }),
      ],
    }));

    // A threshold between two neighbouring scores near the median of the split prompts, from
    // `switchyard route` on this very config (scores do not depend on the threshold).
    const r = await routeCli(config, splitBodies, ['--route', 'split']);
    assert.equal(r.code, 0, r.stderr);
    const scores = [...new Set(r.lines.map((l) => l.score))].sort((a, b) => a - b);
    assert.ok(scores.length >= 10, `too few distinct scores: ${scores}`);
    const mid = Math.floor(scores.length / 2);
    splitThreshold = (scores[mid - 1] + scores[mid]) / 2;
    writeRoutes(dir, routes(splitThreshold));
    proxy = await startProxy(config);
  });

  after(async () => {
    await assertCleanExit(proxy);
    await fake?.stop();
  });

  /** POSTs a chat body; returns {res, tier, rule, dep, attempts, score}. */
  async function chat(b, headers = {}) {
    const res = await post(proxy.url, '/v1/chat/completions', b, { headers });
    const h = res.headers;
    return {
      res,
      status: res.status,
      tier: h['x-switchyard-tier'],
      rule: h['x-switchyard-rule'],
      dep: h['x-switchyard-deployment'],
      route: h['x-switchyard-route'],
      attempts: Number(h['x-switchyard-attempts']),
      score: h['x-switchyard-score'],
    };
  }

  async function expectRule(b, rule, tier, dep, headers = {}) {
    const r = await chat(b, headers);
    assert.equal(r.status, 200, r.res.text);
    validateChatCompletion(JSON.parse(r.res.text));
    assert.equal(r.route, 'rules');
    assert.equal(r.rule, rule, `rule for ${JSON.stringify(b).slice(0, 200)}`);
    assert.equal(r.tier, tier);
    assert.equal(r.dep, dep);
    assert.equal(r.score, undefined, 'a rule decided: no classifier score');
    assert.equal((await fake.last()).body.model, dep, 'the upstream got the deployment\'s model');
  }

  test('no rule matches: the first tier', async () => {
    const r = await chat(body('rules', 'hello there'));
    assert.equal(r.status, 200, r.res.text);
    assert.equal(r.route, 'rules');
    assert.equal(r.tier, 'local');
    assert.equal(r.dep, 'local-a');
    assert.equal(r.rule, undefined);
    assert.equal(r.attempts, 1);
  });

  test('has_tools forces its tier', async () => {
    await expectRule(body('rules', 'weather?', { tools: [weatherTool] }), 'rules[0]', 'flagship', 'flag-a');
  });

  test('has_images forces its tier', async () => {
    await expectRule({
      model: 'rules',
      messages: [{ role: 'user', content: [{ type: 'text', text: 'what is this?' }, { type: 'image_url', image_url: { url: 'data:image/png;base64,iVBORw0KGgo=' } }] }],
    }, 'rules[1]', 'flagship', 'flag-a');
  });

  test('prompt_tokens_over forces its tier (and not below it)', async () => {
    await expectRule(body('rules', 'word '.repeat(170)), 'rules[2]', 'flagship', 'flag-a'); // 850 bytes
    const r = await chat(body('rules', 'word '.repeat(150))); // 750 bytes: 188 tokens
    assert.equal(r.tier, 'local');
  });

  test('turns_over forces its tier', async () => {
    const msgs = [user('a'), { role: 'assistant', content: 'b' }, user('c'), { role: 'assistant', content: 'd' }, user('e')];
    await expectRule({ model: 'rules', messages: msgs }, 'rules[3]', 'mid', 'mid-a');
    const r = await chat({ model: 'rules', messages: msgs.slice(0, 3) });
    assert.equal(r.tier, 'local');
  });

  test('last_user_matches (?i) forces its tier, on the last user turn only', async () => {
    await expectRule(body('rules', 'Please PROVE that 2+2=4'), 'rules[4]', 'flagship', 'flag-a');
    await expectRule(body('rules', 'derive the formula'), 'rules[4]', 'flagship', 'flag-a');
    const r = await chat({ model: 'rules', messages: [user('prove it'), { role: 'assistant', content: 'ok' }, user('thanks')] });
    assert.equal(r.tier, 'local');
    assert.equal((await chat(body('rules', 'an improved version'))).tier, 'local');
  });

  test('header_equals forces its tier', async () => {
    await expectRule(body('rules', 'hello'), 'rules[5]', 'flagship', 'flag-a', { 'x-plan': 'premium' });
    assert.equal((await chat(body('rules', 'hello'), { 'x-plan': 'free' })).tier, 'local');
  });

  test('response_format json forces its tier', async () => {
    await expectRule(body('rules', 'list three colours', { response_format: { type: 'json_object' } }), 'rules[6]', 'mid', 'mid-a');
    await expectRule(body('rules', 'list three colours', {
      response_format: { type: 'json_schema', json_schema: { name: 'x', schema: { type: 'object' } } },
    }), 'rules[6]', 'mid', 'mid-a');
    assert.equal((await chat(body('rules', 'hi', { response_format: { type: 'text' } }))).tier, 'local');
  });

  test('rules apply to streams too', async () => {
    const r = await streamRaw(proxy.url, '/v1/chat/completions', body('rules', 'x', { stream: true, tools: [weatherTool] }));
    assert.equal(r.status, 200, r.text);
    assert.equal(r.headers['x-switchyard-tier'], 'flagship');
    assert.equal(r.headers['x-switchyard-rule'], 'rules[0]');
    assert.equal(r.events[r.events.length - 1].data, '[DONE]');
  });

  test('the classifier threshold splits traffic as `switchyard route` predicts', async (t) => {
    const cli = await routeCli(config, splitBodies);
    assert.equal(cli.code, 0, cli.stderr);
    assert.equal(cli.lines.length, splitBodies.length);
    const got = await pool(splitBodies.length, 8, (i) => chat(splitBodies[i]));
    let hard = 0;
    for (let i = 0; i < got.length; i++) {
      const want = cli.lines[i];
      const r = got[i];
      assert.equal(r.status, 200, r.res.text);
      assert.equal(r.route, 'split');
      assert.equal(want.route, 'split');
      assert.equal(r.rule, undefined);
      assert.equal(r.tier, want.tier, `prompt ${i} (score ${want.score}, threshold ${splitThreshold})`);
      assert.equal(r.tier, want.score >= splitThreshold ? 'flagship' : 'local');
      assert.equal(r.dep, r.tier === 'flagship' ? 'flag-b' : 'local-b');
      assert.ok(Math.abs(Number(r.score) - want.score) < 1e-4, `score header ${r.score} vs ${want.score}`);
      hard += r.tier === 'flagship';
    }
    t.diagnostic(`threshold ${splitThreshold}: ${hard} of ${splitBodies.length} on the flagship`);
    // the threshold sits at the median of distinct scores: both sides get traffic
    assert.ok(hard >= 10 && hard <= splitBodies.length - 10, `${hard} of ${splitBodies.length} on the flagship`);
  });

  test('target_flagship_share converges to the share', async (t) => {
    const bodies = promptBodies('share', 400, 11);
    const got = await pool(bodies.length, 6, (i) => chat(bodies[i]));
    for (const r of got) {
      assert.equal(r.status, 200, r.res.text);
      assert.ok(r.tier === 'local' || r.tier === 'flagship');
      assert.ok(r.score !== undefined);
    }
    const tail = got.slice(100);
    const share = tail.filter((r) => r.tier === 'flagship').length / tail.length;
    t.diagnostic(`flagship share over the last ${tail.length}: ${share.toFixed(3)}`);
    assert.ok(Math.abs(share - 0.3) <= 0.1, `flagship share ${share.toFixed(3)} after warm-up, want 0.3 ± 0.1`);
  });

  test('failover: a 503 moves to the next target of the tier', async () => {
    for (const stream of [false, true]) {
      const b = body('failover', 'fo', { stream });
      const res = stream ? await streamRaw(proxy.url, '/v1/chat/completions', b) : await post(proxy.url, '/v1/chat/completions', b);
      assert.equal(res.status, 200, res.text);
      assert.equal(res.headers['x-switchyard-deployment'], 'local-a');
      assert.equal(res.headers['x-switchyard-attempts'], '2');
      assert.equal(res.headers['x-switchyard-tier'], 'local');
    }
  });

  test('failover across tiers: the next tier serves when the whole tier fails', async () => {
    const r = await chat(body('failover-tier', 'x'));
    assert.equal(r.status, 200, r.res.text);
    assert.equal(r.dep, 'flag-b');
    assert.equal(r.attempts, 2);
  });

  test('failover on a first-byte timeout', async () => {
    const t0 = Date.now();
    const r = await chat(body('failover-timeout', 'x'));
    assert.equal(r.status, 200, r.res.text);
    assert.equal(r.dep, 'local-b');
    assert.equal(r.attempts, 2);
    assert.ok(Date.now() - t0 < 5000, `took ${Date.now() - t0} ms`);
  });

  test('the route\'s fallback policy: a status it does not list, and max_attempts 1, do not fail over', async () => {
    for (const model of ['no-503-fallback', 'one-attempt']) {
      const r = await chat(body(model, 'x'));
      assert.equal(r.status, 503, `${model}: ${r.res.text}`);
      validateError(JSON.parse(r.res.text));
      assert.equal(r.attempts, 1, model);
    }
  });

  test('affinity holds a conversation on one deployment of a weighted tier', async () => {
    const firstDeps = new Set();
    for (let c = 0; c < 12; c++) {
      const messages = [{ role: 'system', content: 'You are terse.' }, user(`conversation ${c}: hello`)];
      let dep = null;
      for (let turn = 0; turn < 5; turn++) {
        const stream = turn === 3;
        const b = { model: 'affinity', messages, stream };
        const res = stream ? await streamRaw(proxy.url, '/v1/chat/completions', b) : await post(proxy.url, '/v1/chat/completions', b);
        assert.equal(res.status, 200, res.text);
        const d = res.headers['x-switchyard-deployment'];
        if (dep === null) {
          dep = d;
          firstDeps.add(d);
        }
        assert.equal(d, dep, `conversation ${c} moved from ${dep} to ${d} at turn ${turn}`);
        messages.push({ role: 'assistant', content: `answer ${turn}` }, user(`follow-up ${turn}`));
      }
    }
    // the conversations themselves are spread by the weighted strategy
    assert.ok(firstDeps.size >= 2, `all 12 conversations on ${[...firstDeps]}`);
  });

  test('a rule still forces its tier in a conversation remembered on another tier', async () => {
    const messages = [user('describe things for me')];
    const t1 = await chat({ model: 'aff-rules', messages });
    assert.equal(t1.dep, 'local-a');
    // the next turn carries an image: the local models cannot see it, the rule says flagship
    messages.push({ role: 'assistant', content: 'sure' }, {
      role: 'user', content: [{ type: 'text', text: 'this one' }, { type: 'image_url', image_url: { url: 'data:image/png;base64,iVBORw0KGgo=' } }],
    });
    const t2 = await chat({ model: 'aff-rules', messages });
    assert.equal(t2.status, 200, t2.res.text);
    assert.equal(t2.rule, 'rules[0]');
    assert.equal(t2.tier, 'flagship');
    assert.equal(t2.dep, 'flag-a', 'affinity overrode the rule\'s tier');
    // the image stays in the history: the rule and the remembered deployment agree
    messages.push({ role: 'assistant', content: 'a cat' }, user('and now?'));
    assert.equal((await chat({ model: 'aff-rules', messages })).dep, 'flag-a');
  });

  test('without affinity the same conversation is spread over the tier', async () => {
    const seen = new Set();
    const messages = [user('one conversation')];
    for (let i = 0; i < 30; i++) seen.add((await chat({ model: 'no-affinity', messages })).dep);
    assert.ok(seen.size >= 2, `30 requests all on ${[...seen]}`);
  });

  test('a model no route claims explicitly passes through by name', async () => {
    const r = await chat(body('w2', 'x'));
    assert.equal(r.status, 200, r.res.text);
    assert.equal(r.route, 'direct');
    assert.equal(r.dep, 'w2');
    assert.equal(r.tier, undefined);
  });
});

describe('circuit breaker', () => {
  const FAILS = 3;
  const COOLDOWN = 1500;
  let fake;
  let flaky;
  let proxy;
  let openedAt = 0;

  before(async () => {
    fake = await startFake();
    flaky = await startFlaky(fake);
    const dir = routesDir('breaker');
    writeRoutes(dir, [
      {
        name: 'br',
        match: { model: 'br' },
        tiers: [{ name: 'local', targets: ['flaky-a', 'good'] }],
        fallback: { on: ['connect', 'timeout', 503] },
      },
      {
        name: 'br-only',
        match: { model: 'br-only' },
        tiers: [{ name: 'local', targets: ['flaky-b'] }],
        fallback: { max_attempts: 1 },
      },
      {
        name: 'br-skip',
        match: { model: 'br-skip' },
        tiers: [{ name: 'local', targets: ['flaky-c'] }, { name: 'flagship', targets: ['flaky-d'] }],
        fallback: { on: [503], max_attempts: 3 },
      },
      {
        name: 'cap2',
        match: { model: 'cap2' },
        tiers: [{ name: 'local', targets: ['capped', 'good'] }],
      },
      {
        name: 'cap',
        match: { model: 'cap' },
        tiers: [{ name: 'local', targets: ['capped', 'flaky-e'] }],
        fallback: { on: [503], max_attempts: 3 },
      },
    ]);
    proxy = await startProxy(makeConfig({
      routes: dir,
      upstream: { retry_base_ms: 5, retry_max_ms: 50, breaker_failures: FAILS, breaker_cooldown_ms: COOLDOWN },
      deployments: [
        { name: 'flaky-a', provider: 'openai', base_url: flaky.base('a'), model: 'flaky-a', price: { input: 0, output: 0 } },
        ...['b', 'c', 'd', 'e'].map((k) => ({
          name: `flaky-${k}`, provider: 'openai', base_url: flaky.base(k), model: `flaky-${k}`, price: { input: 0, output: 0 },
        })),
        fakeDeployment(fake, 'good'),
        fakeDeployment(fake, 'capped', { max_inflight: 1 }),
      ],
    }));
  });

  after(async () => {
    await assertCleanExit(proxy);
    await flaky?.close();
    await fake?.stop();
  });

  async function br(model = 'br') {
    const res = await post(proxy.url, '/v1/chat/completions', body(model, 'ping'));
    return { res, status: res.status, dep: res.headers['x-switchyard-deployment'], attempts: Number(res.headers['x-switchyard-attempts']) };
  }

  /** Fails flaky-a until its breaker opens; returns when the last failure happened. */
  async function openIt() {
    flaky.modes.a = 'fail';
    const before = flaky.counts.a || 0;
    for (let i = 0; i < FAILS; i++) {
      const r = await br();
      assert.equal(r.status, 200, r.res.text);
      assert.equal(r.dep, 'good');
      assert.equal(r.attempts, 2, `failure ${i + 1} of ${FAILS}: flaky-a tried first`);
    }
    assert.equal(flaky.counts.a, before + FAILS);
    return Date.now();
  }

  test('opens after N consecutive failures: requests skip the deployment', async () => {
    openedAt = await openIt();
    const n = flaky.counts.a;
    for (let i = 0; i < 5; i++) {
      const r = await br();
      assert.equal(r.status, 200);
      assert.equal(r.dep, 'good');
      assert.equal(r.attempts, 1, 'the open breaker puts flaky-a last');
    }
    assert.equal(flaky.counts.a, n, 'no request reached flaky-a while its breaker is open');
  });

  test('recovers after the cooldown: one probe, then traffic returns', async () => {
    flaky.modes.a = 'ok';
    const n = flaky.counts.a;
    // every request before the probe skips flaky-a; poll until the probe serves one
    const r = await (async () => {
      for (const end = Date.now() + COOLDOWN + 15000; Date.now() < end; await delay(50)) {
        const x = await br();
        assert.equal(x.status, 200);
        if (x.dep === 'flaky-a') return x;
        assert.equal(x.attempts, 1);
        assert.equal(flaky.counts.a, n, 'flaky-a asked before the cooldown ended');
      }
      throw new Error('flaky-a never came back');
    })();
    assert.equal(r.attempts, 1);
    assert.equal(flaky.counts.a, n + 1, 'exactly one probe');
    assert.ok(Date.now() - openedAt >= COOLDOWN - 300, `probe ${Date.now() - openedAt} ms after the breaker opened`);
    for (let i = 0; i < 5; i++) {
      const x = await br();
      assert.equal(x.dep, 'flaky-a', 'closed again: back to the first target');
      assert.equal(x.attempts, 1);
    }
  });

  test('a failed probe re-opens the breaker', async () => {
    const opened = await openIt();
    const n = flaky.counts.a;
    // still failing: poll until the probe happens (it fails, the request falls back to good)
    for (const end = Date.now() + COOLDOWN + 15000; flaky.counts.a === n; await delay(50)) {
      assert.ok(Date.now() < end, 'no probe after the cooldown');
      const x = await br();
      assert.equal(x.dep, 'good');
    }
    assert.equal(flaky.counts.a, n + 1);
    assert.ok(Date.now() - opened >= COOLDOWN - 300, `probe after ${Date.now() - opened} ms, before the cooldown`);
    // open again: the next requests skip flaky-a
    for (let i = 0; i < 5; i++) {
      const x = await br();
      assert.equal(x.dep, 'good');
      assert.equal(x.attempts, 1);
    }
    assert.equal(flaky.counts.a, n + 1, 'requests reached flaky-a after a failed probe');
    flaky.modes.a = 'ok';
    const back = await (async () => {
      for (const end = Date.now() + COOLDOWN + 15000; Date.now() < end; await delay(50)) {
        const x = await br();
        if (x.dep === 'flaky-a') return x;
      }
      return null;
    })();
    assert.ok(back, 'flaky-a never recovered');
  });

  test('every target open: 503 deployment_unavailable with Retry-After, the upstream untouched', async () => {
    flaky.modes.b = 'fail';
    for (let i = 0; i < FAILS; i++) {
      const r = await br('br-only');
      assert.equal(r.status, 503, r.res.text);
    }
    const n = flaky.counts.b;
    const r = await br('br-only');
    assert.equal(r.status, 503, r.res.text);
    const e = errorOf(r.res);
    validateError(JSON.parse(r.res.text));
    assert.equal(e.code, 'deployment_unavailable');
    assert.match(e.message, /flaky-b/);
    assert.ok(r.res.headers['retry-after']);
    assert.equal(flaky.counts.b, n);
  });

  test('a retry never goes to a deployment whose breaker is open', async () => {
    // open flaky-c's breaker; flaky-d (the next tier) serves meanwhile
    flaky.modes.c = 'fail';
    for (let i = 0; i < FAILS; i++) {
      const r = await br('br-skip');
      assert.equal(r.dep, 'flaky-d');
      assert.equal(r.attempts, 2);
    }
    const c = flaky.counts.c;
    assert.equal((await br('br-skip')).attempts, 1, 'open: flaky-c skipped');
    // now flaky-d fails too: the retries must not fall back onto the open flaky-c
    flaky.modes.d = 'fail';
    const r = await br('br-skip');
    assert.equal(r.status, 503, r.res.text);
    assert.equal(flaky.counts.c, c, 'a retry reached flaky-c while its breaker was open');
    flaky.modes.d = 'ok';
  });

  test('a retry never exceeds a deployment\'s max_inflight', async () => {
    // one slow request holds capped's only slot
    const before = (await fake.stats()).requests;
    const busy = post(proxy.url, '/v1/chat/completions', body('capped', 'slow [[fake first_byte_ms=1500]]'));
    await waitFor(async () => (await fake.stats()).requests > before, { what: 'the slow request to reach the fake' });
    flaky.modes.e = 'fail';
    const e = flaky.counts.e || 0;
    const r = await br('cap');
    assert.equal(r.status, 503, `served by ${r.dep}: ${r.res.text}`);
    assert.notEqual(r.dep, 'capped');
    assert.ok(flaky.counts.e > e);
    assert.equal((await busy).status, 200);
    flaky.modes.e = 'ok';
  });

  test('half-open: concurrent requests send exactly one probe', async () => {
    // open flaky-a again and let the cooldown pass while it keeps failing
    await openIt();
    const n = flaky.counts.a;
    await delay(COOLDOWN + 100); // the cooldown itself is what is tested here, not a condition
    const got = await Promise.all(Array.from({ length: 12 }, () => br()));
    for (const r of got) assert.equal(r.status, 200, r.res.text);
    assert.equal(flaky.counts.a, n + 1, `${flaky.counts.a - n} probes reached flaky-a at once`);
    flaky.modes.a = 'ok';
  });

  test('concurrent requests never exceed max_inflight', async () => {
    const got = await Promise.all(Array.from({ length: 8 }, (_, i) => post(proxy.url, '/v1/chat/completions',
      body('cap2', `slow ${i} [[fake first_byte_ms=600]]`))));
    const deps = got.map((r) => {
      assert.equal(r.status, 200, r.text);
      return r.headers['x-switchyard-deployment'];
    });
    assert.equal(deps.filter((d) => d === 'capped').length, 1, `deployments: ${deps}`);
  });
});
