// The command line: version, check (every problem listed with its JSON path, exit 1; valid
// configs exit 0), the shipped configs, and the default config with no upstream reachable.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import {
  SOURCE_DIR, runCli as run, writeConfig, makeConfig, startProxy, assertCleanExit, post, chatBody, errorOf,
  tmpDir, startFake,
} from './lib/harness.mjs';
import { validateError, validateChatCompletion } from './lib/schema.mjs';

const out = (r) => `${r.stdout}\n${r.stderr}`;

/** Runs the CLI and fails on any sanitizer report (a leak on an error path exits 1 or 23 too). */
async function runCli(args, opts) {
  const r = await run(args, opts);
  assert.doesNotMatch(r.stderr, /LeakSanitizer|AddressSanitizer|UndefinedBehaviorSanitizer|runtime error:/,
    `switchyard ${args.join(' ')}: sanitizer report\n${r.stderr.slice(-8000)}`);
  return r;
}

const goodDeployment = (name = 'local', extra = {}) => ({
  name, provider: 'openai', base_url: 'http://127.0.0.1:9/v1', model: `${name}-model`, price: { input: 0, output: 0 }, ...extra,
});

test('switchyard version', async () => {
  const r = await runCli(['version']);
  assert.equal(r.code, 0, out(r));
  assert.match(r.stdout, /\d+\.\d+\.\d+/);
});

test('unknown subcommand: non-zero exit with usage', async () => {
  const r = await runCli(['frobnicate']);
  assert.notEqual(r.code, 0);
  assert.match(out(r), /usage|serve|check/i);
});

test('check: a valid config exits 0', async () => {
  const p = writeConfig(makeConfig({ deployments: [goodDeployment('a'), goodDeployment('b')], aliases: { both: ['a', 'b'] } }));
  const r = await runCli(['check', '--config', p]);
  assert.equal(r.code, 0, out(r));
});

test('check: every problem listed, one per line, with JSON paths; exit 1', async () => {
  const cfg = makeConfig({
    deployments: [
      { ...goodDeployment('a'), timout_ms: 5 },                        // unknown key
      { name: 'b', provider: 'openai', model: 'm', price: { input: 0, output: 0 } }, // no base_url
      { ...goodDeployment('c'), provider: 'martian' },                  // bad enum value
      { ...goodDeployment('d'), max_inflight: 'eight' },                // wrong type
    ],
    aliases: { combo: ['a', 'nope'] },                                  // unknown target
  });
  cfg.listne = '127.0.0.1:1';                                           // unknown top-level key
  const p = writeConfig(cfg);
  const r = await runCli(['check', '--config', p]);
  const o = out(r);
  assert.equal(r.code, 1, o);
  const expectations = [
    [/deployments\[0\]\.timout_ms/, 'deployments[0].timout_ms'],
    [/deployments\[1\][^\n]*base_url/, 'deployments[1] base_url'],
    [/deployments\[2\]\.provider/, 'deployments[2].provider'],
    [/deployments\[3\]\.max_inflight/, 'deployments[3].max_inflight'],
    [/aliases[^\n]*combo[^\n]*nope|aliases\.combo[^\n]*/, 'aliases.combo'],
    [/listne/, 'listne'],
  ];
  for (const [re, what] of expectations) assert.match(o, re, `check output does not mention ${what}:\n${o}`);
  // One problem per line: each path on its own line.
  const lines = o.split('\n').filter((l) => /deployments\[\d\]|aliases|listne/.test(l));
  assert.ok(lines.length >= expectations.length, `expected >= ${expectations.length} problem lines:\n${o}`);
});

// DESIGN §4: silence about a price is an error at check (explicit price, or conf/prices.json).
test('check: a deployment with no known price is an error', async () => {
  const d = goodDeployment('unpriced', { model: 'surely-not-a-priced-model-xyz' });
  delete d.price;
  const r = await runCli(['check', '--config', writeConfig(makeConfig({ deployments: [d] }))]);
  assert.equal(r.code, 1, out(r));
  assert.match(out(r), /deployments\[0\][^\n]*price|price[^\n]*deployments\[0\]/);
});

test('check: bad listen address, duplicate names, duplicate JSON keys', async () => {
  const cfg = makeConfig({ deployments: [goodDeployment('a'), goodDeployment('a')] });
  cfg.listen = 'not-an-address';
  const r = await runCli(['check', '--config', writeConfig(cfg)]);
  assert.equal(r.code, 1, out(r));
  assert.match(out(r), /listen/);
  assert.match(out(r), /deployments\[1\]/);

  const dup = `{"listen": "127.0.0.1:0", "listen": "127.0.0.1:1", "deployments": []}`;
  const d = await runCli(['check', '--config', writeConfig(dup)]);
  assert.equal(d.code, 1, out(d));
  assert.match(out(d), /listen|duplicate/i);
});

test('check: malformed JSON and a missing file exit 1 with a message', async () => {
  const r = await runCli(['check', '--config', writeConfig('{"listen": "127.0.0.1:0",,}')]);
  assert.equal(r.code, 1, out(r));
  assert.ok(out(r).trim().length > 0);
  const m = await runCli(['check', '--config', path.join(tmpDir(), 'does-not-exist.json')]);
  assert.equal(m.code, 1, out(m));
  assert.match(out(m), /does-not-exist\.json/);
});

test('check: an unset api_key_env is a warning, not an error', async () => {
  const env = 'SY_IT_CLI_UNSET_KEY_91';
  const p = writeConfig(makeConfig({ deployments: [goodDeployment('keyed', { api_key_env: env })] }));
  const r = await runCli(['check', '--config', p], { env: { [env]: undefined } });
  assert.equal(r.code, 0, out(r));
  assert.match(out(r), new RegExp(env));
});

test('serve with an invalid config: exits non-zero without listening', async () => {
  const p = writeConfig('{"deployments": [{"name": 1}]}');
  const r = await runCli(['serve', '--config', p, '--listen', '127.0.0.1:0'], { timeout: 20000 });
  assert.notEqual(r.code, 0);
  assert.doesNotMatch(r.stdout, /listening on/);
  assert.match(out(r), /deployments\[0\]/);
});

for (const name of ['switchyard.json', 'demo.json']) {
  test(`the shipped conf/${name} passes check`, async () => {
    const p = path.join(SOURCE_DIR, 'conf', name);
    assert.ok(fs.existsSync(p), `${p} missing`);
    const r = await runCli(['check', '--config', p], { cwd: SOURCE_DIR });
    assert.equal(r.code, 0, out(r));
  });
}

test('default config with no upstream reachable: 502/503 naming the deployment', async () => {
  const p = path.join(SOURCE_DIR, 'conf', 'switchyard.json');
  const conf = JSON.parse(fs.readFileSync(p, 'utf8'));
  // No keys in the environment: keyed deployments are disabled and must say what to set.
  const env = {};
  for (const d of conf.deployments) if (d.api_key_env) env[d.api_key_env] = undefined;
  // The shipped configs' relative paths assume the repository root as working directory.
  const proxy = await startProxy(p, { env, cwd: SOURCE_DIR });
  try {
    for (const d of conf.deployments) {
      const r = await post(proxy.url, '/v1/chat/completions', chatBody(d.name, 'anyone there?'), { timeout: 60000 });
      assert.ok(r.status === 502 || r.status === 503, `${d.name}: status ${r.status} ${r.text.slice(0, 300)}`);
      validateError(JSON.parse(r.text), d.name);
      const e = errorOf(r);
      assert.ok(e.message.includes(d.name), `${d.name}: message does not name the deployment: ${e.message}`);
      if (d.api_key_env) {
        assert.equal(r.status, 503, `${d.name}: disabled deployment must be 503`);
        assert.ok(e.message.includes(d.api_key_env), `${d.name}: message does not name ${d.api_key_env}: ${e.message}`);
      }
    }
  } finally {
    await assertCleanExit(proxy);
  }
});

test('conf/demo.json serves through the bundled fake upstream', async () => {
  // The demo expects the fake on a fixed port; point it at ours instead (same paths otherwise).
  const fake = await startFake();
  const demo = JSON.parse(fs.readFileSync(path.join(SOURCE_DIR, 'conf', 'demo.json'), 'utf8'));
  for (const d of demo.deployments) {
    d.base_url = d.base_url.replace(/^http:\/\/[^/]+/, fake.url);
  }
  demo.data_dir = path.join(tmpDir(), 'demo-data');
  const proxy = await startProxy(writeConfig(demo), { cwd: SOURCE_DIR });
  try {
    const names = [...demo.deployments.map((d) => d.name), ...Object.keys(demo.aliases || {})];
    for (const name of names) {
      const r = await post(proxy.url, '/v1/chat/completions', chatBody(name, 'demo'));
      assert.equal(r.status, 200, `${name}: ${r.text.slice(0, 300)}`);
      validateChatCompletion(r.json(), name);
    }
  } finally {
    await assertCleanExit(proxy);
    await fake.stop();
  }
});
