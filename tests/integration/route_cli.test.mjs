// `switchyard route`: one JSON line per request (route, tier, deployment, score, rule, top
// features) without contacting any upstream; --route forces a route; errors per line; and
// --calibrate SHARE prints the threshold that, pasted into the route, sends that share of the
// same requests to the flagship tier, both offline and through the proxy.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startFake, startProxy, makeConfig, fakeDeployment, assertCleanExit, post, writeConfig,
} from './lib/harness.mjs';
import { WEIGHTS, routesDir, writeRoutes, routeCli, runWithInput } from './fixtures/routing.mjs';
import { promptBodies } from './fixtures/prompts.mjs';

const unreachable = (name) => ({
  name, provider: 'openai', base_url: 'http://127.0.0.1:9/v1', model: `${name}-model`, price: { input: 0, output: 0 },
});

const autoRoute = (threshold) => ({
  name: 'auto',
  match: { model: ['auto', 'switchyard/auto'] },
  rules: [
    { when: { has_tools: true }, tier: 'flagship' },
    { when: { last_user_matches: '(?i)\\bprove\\b' }, tier: 'flagship' },
    { when: { header_equals: { 'x-plan': 'free' } }, tier: 'local' },
  ],
  classifier: { weights: WEIGHTS, ...(threshold === undefined ? {} : { threshold }) },
  tiers: [{ name: 'local', targets: ['local-a', 'local-b'] }, { name: 'flagship', targets: ['flag-a'] }],
});
const routes = (threshold) => [autoRoute(threshold), { name: 'direct', match: { model: '*' }, target: 'by_model_name' }];

let dir;
let config;
let fake;
let proxy;

before(() => {
  dir = routesDir('route-cli');
  writeRoutes(dir, routes(0.5));
  config = writeConfig(makeConfig({ routes: dir, deployments: ['local-a', 'local-b', 'flag-a'].map(unreachable) }));
});

after(async () => {
  await assertCleanExit(proxy);
  await fake?.stop();
});

const tool = { type: 'function', function: { name: 'f', parameters: { type: 'object', properties: {} } } };
const msg = (text) => [{ role: 'user', content: text }];

function assertNoSanitizer(r) {
  assert.doesNotMatch(r.stderr, /LeakSanitizer|AddressSanitizer|runtime error:/, r.stderr.slice(-4000));
}

test('one line per request: route, tier, deployment, score, rule, features', async () => {
  const input = [
    { model: 'auto', messages: msg('hi there') },
    { model: 'switchyard/auto', messages: msg('Write a proof sketch of the four colour theorem, then discuss its history in detail.') },
    { model: 'auto', messages: msg('weather in Paris?'), tools: [tool] },
    { model: 'auto', messages: msg('Prove that sqrt(2) is irrational.') },
    { model: 'local-b', messages: msg('direct') },
    { model: 'flag-a-model', messages: msg('by upstream name') },
    '',
    { model: 'nope', messages: msg('x') },
    '{"model": "auto", "messages": [',
    { messages: msg('no model: auto') },
  ];
  const r = await routeCli(config, input);
  assertNoSanitizer(r);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.lines.length, input.length - 1, 'the blank line is skipped');
  const [plain, long, tools, prove, direct, byModel, nope, broken, noModel] = r.lines;

  for (const l of [plain, long, noModel]) {
    assert.deepEqual(Object.keys(l).sort(), ['deployment', 'features', 'route', 'rule', 'score', 'tier']);
    assert.equal(l.route, 'auto');
    assert.equal(l.rule, null);
    assert.ok(typeof l.score === 'number' && l.score >= 0 && l.score <= 1, JSON.stringify(l));
    assert.equal(l.tier, l.score >= 0.5 ? 'flagship' : 'local');
    assert.equal(l.deployment, l.tier === 'flagship' ? 'flag-a' : 'local-a');
    assert.ok(Array.isArray(l.features) && l.features.length > 0 && l.features.length <= 8);
    for (const [name, c] of l.features) {
      assert.equal(typeof name, 'string');
      assert.equal(typeof c, 'number');
    }
    // the top features come largest first
    const mags = l.features.map(([, c]) => Math.abs(c));
    assert.deepEqual(mags, [...mags].sort((a, b) => b - a));
  }
  assert.notEqual(plain.score, long.score);

  for (const [l, rule] of [[tools, 'rules[0]'], [prove, 'rules[1]']]) {
    assert.equal(l.route, 'auto');
    assert.equal(l.rule, rule);
    assert.equal(l.tier, 'flagship');
    assert.equal(l.deployment, 'flag-a');
    assert.equal(l.score, null, 'a rule decided: no score');
    assert.deepEqual(l.features, []);
  }
  assert.equal(direct.route, 'direct');
  assert.equal(direct.deployment, 'local-b');
  assert.equal(direct.tier, null);
  assert.equal(direct.score, null);
  assert.equal(byModel.deployment, 'flag-a');
  assert.equal(nope.line, 8);
  assert.match(nope.error, /no route or deployment/);
  assert.equal(broken.line, 9);
  assert.equal(typeof broken.error, 'string');
});

test('--route forces a route whatever the model; an unknown route is an error', async () => {
  const r = await routeCli(config, [{ model: 'local-b', messages: msg('hello') }, { model: 'gpt-9', messages: msg('x') }], ['--route', 'auto']);
  assertNoSanitizer(r);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.lines.length, 2, 'one line per request');
  for (const l of r.lines) {
    assert.equal(l.route, 'auto');
    assert.equal(typeof l.score, 'number');
  }
  const bad = await routeCli(config, [{ model: 'auto', messages: msg('x') }], ['--route', 'missing']);
  assertNoSanitizer(bad);
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /no route named 'missing'/);
});

test('usage errors', async () => {
  for (const args of [['--calibrate', '1.5'], ['--calibrate', '0'], ['--calibrate', 'x'], ['--bogus']]) {
    const r = await runWithInput(['route', '--config', config, ...args], '');
    assertNoSanitizer(r);
    assert.equal(r.code, 2, `${args}: ${r.stderr}`);
  }
  const r = await runWithInput(['route', '--config', '/nonexistent/config.json'], '');
  assertNoSanitizer(r);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /error:/);
});

/** The flagship share `switchyard route` gives <bodies> on the routes directory as it is. */
async function offlineShare(bodies) {
  const r = await routeCli(config, bodies);
  assert.equal(r.code, 0, r.stderr);
  return r.lines.filter((l) => l.tier === 'flagship').length;
}

test('--calibrate: the printed threshold sends the share of the same requests to the flagship', async (t) => {
  // 250 scored prompts and 20 forced to the flagship by a rule (the threshold covers the rest)
  const bodies = [
    ...promptBodies('auto', 250, 5),
    ...Array.from({ length: 20 }, (_, i) => ({ model: 'auto', messages: msg(`tool call ${i}`), tools: [tool] })),
  ];
  const n = bodies.length;
  for (const share of [0.2, 0.35, 0.5]) {
    writeRoutes(dir, routes(0.5));
    const c = await routeCli(config, bodies, ['--calibrate', String(share)]);
    assertNoSanitizer(c);
    assert.equal(c.code, 0, c.stderr);
    assert.equal(c.lines.length, 1, 'one line, no per-request output');
    const cal = c.lines[0];
    assert.deepEqual(Object.keys(cal).sort(), ['achieved_share', 'forced_by_rules', 'requests', 'scored', 'share', 'threshold']);
    assert.equal(cal.share, share);
    assert.equal(cal.requests, n);
    assert.equal(cal.forced_by_rules, 20);
    assert.equal(cal.scored, n - 20);
    assert.ok(cal.threshold > 0 && cal.threshold < 1);
    t.diagnostic(`share ${share}: ${JSON.stringify(cal)}`);

    // the printed threshold, pasted into the route, does what the line says
    writeRoutes(dir, routes(cal.threshold));
    const hard = await offlineShare(bodies);
    assert.equal(hard, Math.round(cal.achieved_share * n), `threshold ${cal.threshold}: ${hard} of ${n} on the flagship, line says ${cal.achieved_share}`);
    // ... which is the share asked for, up to ties at the threshold
    assert.ok(hard >= Math.ceil(share * n) && hard <= Math.ceil(share * n) + 3, `${hard} of ${n} for share ${share}`);
  }
});

test('--calibrate: the same threshold through the proxy sends the same requests to the flagship', async () => {
  const bodies = promptBodies('auto', 200, 9);
  writeRoutes(dir, routes(0.5));
  const c = await routeCli(config, bodies, ['--calibrate', '0.3']);
  assert.equal(c.code, 0, c.stderr);
  const { threshold } = c.lines[0];
  writeRoutes(dir, routes(threshold));
  const offline = await routeCli(config, bodies);
  assert.equal(offline.code, 0, offline.stderr);

  fake = await startFake();
  proxy = await startProxy(makeConfig({ routes: dir, deployments: ['local-a', 'local-b', 'flag-a'].map((nm) => fakeDeployment(fake, nm)) }));
  let hard = 0;
  for (let i = 0; i < bodies.length; i++) {
    const res = await post(proxy.url, '/v1/chat/completions', bodies[i]);
    assert.equal(res.status, 200, res.text);
    assert.equal(res.headers['x-switchyard-tier'], offline.lines[i].tier, `request ${i}`);
    assert.equal(res.headers['x-switchyard-deployment'], offline.lines[i].deployment);
    hard += res.headers['x-switchyard-tier'] === 'flagship';
  }
  assert.equal(hard, Math.round(c.lines[0].achieved_share * bodies.length));
  assert.ok(Math.abs(hard / bodies.length - 0.3) <= 0.02, `${hard} of ${bodies.length}`);
});
