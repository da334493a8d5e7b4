// Hot reload (DESIGN §5, issue 3): POST /admin/reload with the master key and SIGHUP rebuild
// config, routes and weights. Streams started before a reload all complete on the old tables;
// new requests use the new rules; a broken route file or config answers 400 config_invalid
// (SIGHUP: logs it) and changes nothing; the admin endpoint needs the master key.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import {
  startFake, startProxy, makeConfig, fakeDeployment, assertCleanExit, post, request, streamRaw, writeConfig,
  errorOf, waitFor,
} from './lib/harness.mjs';
import { validateError } from './lib/schema.mjs';
import { WEIGHTS, routesDir, writeRoutes } from './fixtures/routing.mjs';

const MASTER_ENV = 'SY_IT_RELOAD_MASTER';
const MASTER = 'sk-master-reload-test';
const STREAMS = 16;
const CHUNKS = 20;

let fake;
let proxy;
let dir;
let configPath;
let configObj;

/** Version <v> of the route table: which deployments serve, and what "escalate" does. */
function routesV(v) {
  const local = v === 2 ? 'local-b' : 'local-a';
  const flag = v === 2 ? 'flag-b' : 'flag-a';
  const rules = v === 1
    ? [{ when: { last_user_matches: '(?i)escalate' }, tier: 'flagship' }]
    : v === 2
      ? [{ when: { last_user_matches: '(?i)escalate' }, tier: 'local' }, { when: { has_tools: true }, tier: 'flagship' }]
      : [{ when: { header_equals: { 'x-v3': 'yes' } }, tier: 'flagship' }];
  return [{
    name: 'auto',
    match: { model: 'auto' },
    rules,
    classifier: { weights: WEIGHTS, threshold: 1 }, // nothing reaches the flagship by score
    tiers: [{ name: 'local', targets: [local] }, { name: 'flagship', targets: [flag] }],
  }];
}

before(async () => {
  fake = await startFake({ threads: 2 });
  dir = routesDir('reload');
  writeRoutes(dir, routesV(1));
  configObj = makeConfig({
    routes: dir,
    auth: { master_key_env: MASTER_ENV },
    deployments: ['local-a', 'local-b', 'flag-a', 'flag-b'].map((n) => fakeDeployment(fake, n)),
  });
  configPath = writeConfig(configObj);
  proxy = await startProxy(configPath, { env: { [MASTER_ENV]: MASTER } });
});

after(async () => {
  await assertCleanExit(proxy);
  await fake?.stop();
});

const reload = (key = MASTER) => request(proxy.url, 'POST', '/admin/reload', {
  body: '', headers: key ? { authorization: `Bearer ${key}` } : {},
});

async function route(text, headers = {}, extra = {}) {
  const res = await post(proxy.url, '/v1/chat/completions', { model: 'auto', messages: [{ role: 'user', content: text }], ...extra }, { headers });
  assert.equal(res.status, 200, res.text);
  return { tier: res.headers['x-switchyard-tier'], dep: res.headers['x-switchyard-deployment'], rule: res.headers['x-switchyard-rule'] };
}

/** Starts <n> paced streams (about a second each) and waits until the fake streams them all. */
async function startStreams(n, tag) {
  const base = (await fake.stats()).active_streams;
  const streams = Array.from({ length: n }, (_, i) => streamRaw(proxy.url, '/v1/chat/completions', {
    model: 'auto',
    stream: true,
    messages: [{ role: 'user', content: `${tag} ${i} [[fake chunks=${CHUNKS} interval_ms=50]]` }],
  }));
  await waitFor(async () => (await fake.stats()).active_streams >= base + n, { timeout: 15000, what: `${n} streams to start` });
  return streams;
}

/** Every stream completed normally on <dep>. */
async function assertStreamsDone(streams, dep) {
  const results = await Promise.all(streams);
  for (const r of results) {
    assert.equal(r.status, 200, r.text);
    assert.equal(r.headers['x-switchyard-deployment'], dep);
    const data = r.events.map((e) => e.data);
    assert.equal(data[data.length - 1], '[DONE]', `stream cut: ${r.text.slice(-300)}`);
    const chunks = data.slice(0, -1).map((d) => JSON.parse(d));
    assert.ok(chunks.every((c) => !c.error), 'a stream ended with an error event');
    assert.equal(chunks.filter((c) => c.choices?.[0]?.finish_reason === 'stop').length, 1);
  }
}

test('the admin endpoint needs the master key', async () => {
  for (const key of [null, 'sk-wrong']) {
    const r = await reload(key);
    assert.equal(r.status, 401, r.text);
    validateError(JSON.parse(r.text));
  }
  const g = await request(proxy.url, 'GET', '/admin/reload', { headers: { authorization: `Bearer ${MASTER}` } });
  assert.equal(g.status, 405, g.text);
  // nothing changed
  assert.deepEqual(await route('please escalate'), { tier: 'flagship', dep: 'flag-a', rule: 'rules[0]' });
});

test('reload under load: streams started before it all complete; new requests use the new rules', async () => {
  assert.deepEqual(await route('please escalate'), { tier: 'flagship', dep: 'flag-a', rule: 'rules[0]' });
  assert.equal((await route('hello')).dep, 'local-a');

  const streams = await startStreams(STREAMS, 'before-reload');
  writeRoutes(dir, routesV(2));
  const r = await reload();
  assert.equal(r.status, 200, r.text);
  const j = r.json();
  assert.equal(j.status, 'reloaded');
  assert.equal(j.routes, 1);
  assert.equal(j.deployments, 4);

  // while the old streams are still running, new requests already see the new tables
  assert.ok((await fake.stats()).active_streams >= 1, 'the streams ended before the reload was checked');
  assert.deepEqual(await route('please escalate'), { tier: 'local', dep: 'local-b', rule: 'rules[0]' });
  assert.deepEqual(await route('weather?', {}, {
    tools: [{ type: 'function', function: { name: 'w', parameters: { type: 'object', properties: {} } } }],
  }), { tier: 'flagship', dep: 'flag-b', rule: 'rules[1]' });
  assert.equal((await route('hello')).dep, 'local-b');

  await assertStreamsDone(streams, 'local-a');
});

test('a broken route file: 400 config_invalid naming the problem, and nothing changes', async () => {
  const good = fs.readFileSync(`${dir}/routes.json`, 'utf8');
  const broken = routesV(3);
  broken[0].tiers[0].targets = ['local-zzz'];
  writeRoutes(dir, broken);
  const streams = await startStreams(4, 'before-broken-reload');
  const r = await reload();
  assert.equal(r.status, 400, r.text);
  const e = errorOf(r);
  validateError(JSON.parse(r.text));
  assert.equal(e.code, 'config_invalid');
  assert.match(e.message, /routes\.json: routes\[0\]\.tiers\[0\]\.targets\[0\]: unknown deployment 'local-zzz'/);
  // still version 2
  assert.deepEqual(await route('please escalate'), { tier: 'local', dep: 'local-b', rule: 'rules[0]' });
  assert.equal((await route('hi', { 'x-v3': 'yes' })).tier, 'local');

  // not JSON at all, and a classifier threshold out of range: the same
  writeRoutes(dir, '{"routes": [');
  let x = await reload();
  assert.equal(x.status, 400, x.text);
  assert.equal(errorOf(x).code, 'config_invalid');
  const bad = routesV(2);
  bad[0].classifier.threshold = 7;
  writeRoutes(dir, bad);
  x = await reload();
  assert.equal(x.status, 400, x.text);
  assert.match(errorOf(x).message, /classifier\.threshold/);
  assert.equal((await route('hello')).dep, 'local-b');
  await assertStreamsDone(streams, 'local-b');

  // a broken config file: the same
  writeRoutes(dir, good);
  fs.writeFileSync(configPath, JSON.stringify({ ...configObj, deployments: [{ name: 'x' }] }));
  x = await reload();
  assert.equal(x.status, 400, x.text);
  assert.equal(errorOf(x).code, 'config_invalid');
  assert.match(errorOf(x).message, /deployments\[0\]/);
  assert.equal((await route('hello')).dep, 'local-b');
  fs.writeFileSync(configPath, JSON.stringify(configObj));
  assert.equal((await reload()).status, 200);
  assert.deepEqual(await route('please escalate'), { tier: 'local', dep: 'local-b', rule: 'rules[0]' });
});

test('SIGHUP reloads too, under load; a broken file on SIGHUP changes nothing', async () => {
  const streams = await startStreams(STREAMS, 'before-sighup');
  writeRoutes(dir, routesV(3));
  proxy.proc.kill('SIGHUP');
  await waitFor(async () => (await route('hello')).dep === 'local-a', { timeout: 15000, what: 'the SIGHUP reload' });
  assert.deepEqual(await route('hi', { 'x-v3': 'yes' }), { tier: 'flagship', dep: 'flag-a', rule: 'rules[0]' });
  assert.equal((await route('please escalate')).tier, 'local');
  await assertStreamsDone(streams, 'local-b');

  const logged = proxy.stderr().length;
  const broken = routesV(2);
  broken[0].rules[0].tier = 'nowhere';
  writeRoutes(dir, broken);
  proxy.proc.kill('SIGHUP');
  await waitFor(() => /reload failed/.test(proxy.stderr().slice(logged)), { timeout: 15000, what: 'the failed reload in the log' });
  assert.match(proxy.stderr().slice(logged), /rules\[0\]\.tier: unknown tier 'nowhere'/);
  assert.deepEqual(await route('hi', { 'x-v3': 'yes' }), { tier: 'flagship', dep: 'flag-a', rule: 'rules[0]' });
  assert.equal((await route('hello')).dep, 'local-a');
});
