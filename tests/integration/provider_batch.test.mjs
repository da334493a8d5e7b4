// Provider batch API (issue 7 item 4, DESIGN §9): a /v1/batches batch whose lines route to a
// deployment with "batch_api": true goes to the fake's OpenAI Batches API as one provider batch
// (no per-line chat calls), every line runs there exactly once, the output and error files equal
// a direct run line by line, and spend prices those lines with the deployment's batch discount.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { toFile } from 'openai';
import {
  startFake, startProxy, makeConfig, fakeDeployment, assertCleanExit, request, waitFor,
  tmpDir, haveRedis, startRedis, fileLines,
} from './lib/harness.mjs';

const MASTER_ENV = 'SY_PB_TEST_MASTER';
const MASTER = 'sk-pb-test-master';
const AUTH = { authorization: `Bearer ${MASTER}` };
const PRICE = { input: 3, output: 15, batch_discount: 0.5 };

const pico = (usdPerM) => BigInt(Math.round((usdPerM || 0) * 1e6));
/** The proxy's formula (prices.h) with the batch discount: exact pico-dollars, one rounding. */
function costMicro(price, usage, discount) {
  const p = BigInt(usage.prompt_tokens) * pico(price.input) +
    BigInt(usage.completion_tokens) * pico(price.output);
  const ppm = BigInt(Math.round((1 - discount) * 1e6));
  const d = (p * ppm) / 1000000n; /* exact here: the test prices make p * ppm a multiple */
  return Number((d * 1000000n + 500000000000n) / 1000000000000n);
}

function dayUTC(offset = 0) {
  return new Date(Date.now() + offset * 86400000).toISOString().slice(0, 10);
}

async function spendBy(proxy, deployment) {
  const r = await request(proxy.url, 'GET',
    `/v1/spend?from=${dayUTC(-1)}&to=${dayUTC(1)}&group_by=deployment`, { headers: AUTH });
  assert.equal(r.status, 200, r.text);
  const body = r.json();
  return (body.rows || []).find((g) => g.deployment === deployment) || null;
}

const TERMINAL = ['completed', 'failed', 'expired', 'cancelled'];

function chatLines(model, n, tag) {
  return Array.from({ length: n }, (_, i) => JSON.stringify({
    custom_id: `${tag}-${i}`, method: 'POST', url: '/v1/chat/completions',
    body: { model, messages: [{ role: 'user', content: `${tag} line ${i}` }] },
  })).join('\n') + '\n';
}

/** Registers before/after for the enclosing describe: a fake, a proxy with the master key and
 * what <build(fake)> returns ({deployments, batch, env}), and a master-key client, in ctx. */
function withProxy(build) {
  const ctx = {};
  before(async () => {
    ctx.fake = await startFake();
    const { deployments, batch, env = {} } = build(ctx.fake);
    ctx.proxy = await startProxy(makeConfig({
      auth: { master_key_env: MASTER_ENV }, deployments, batch,
    }), { env: { [MASTER_ENV]: MASTER, ...env } });
    ctx.client = ctx.proxy.client({ apiKey: MASTER });
  });
  after(async () => {
    await ctx.proxy?.stop();
    await ctx.fake?.stop();
    await assertCleanExit(ctx.proxy);
  });
  return ctx;
}

/** Clears the fake's request log and counters. */
async function resetFake(fake) {
  await request(fake.url, 'POST', '/_reqlog', { body: '' });
  await fake.reset();
}

/** Uploads <jsonl> and creates a chat-completions batch of it. */
async function submitBatch(client, jsonl) {
  const f = await client.files.create({ file: await toFile(Buffer.from(jsonl), 'in.jsonl'), purpose: 'batch' });
  return client.batches.create({
    input_file_id: f.id, endpoint: '/v1/chat/completions', completion_window: '24h',
  });
}

async function waitEnd(client, id, timeout = 60000) {
  let done;
  await waitFor(async () => {
    done = await client.batches.retrieve(id);
    return TERMINAL.includes(done.status);
  }, { timeout, interval: 100, what: `batch ${id} to end` });
  return done;
}

/** The fake's provider-batch API calls so far: creations ({input_file_id} bodies) and cancels. */
async function providerCalls(fake) {
  const log = (await request(fake.url, 'GET', '/_reqlog')).json();
  const creates = log.requests.filter((r) => /\/batches$/.test(r.path) && r.body.includes('input_file_id'));
  const cancels = log.requests.filter((r) => /\/batches\/[^/]+\/cancel$/.test(r.path));
  return { creates, cancels };
}

describe('provider batch API', () => {
  const ctx = withProxy((fake) => ({
    deployments: [
      fakeDeployment(fake, 'gpt-flag', { price: PRICE, batch_api: true }),
      // the provider keeps its batches pending until cancelled (100000 polls)
      fakeDeployment(fake, 'gpt-held', { price: PRICE, batch_api: true, directives: { batch_polls: 100000 } }),
    ],
    batch: { poll_ms: 50, workers: 2, retry_base_ms: 10 },
  }));

  test('lines go out as one provider batch and come back equal to a direct run', async () => {
    const { fake, proxy, client } = ctx;
    const texts = ['alpha line', 'beta line, a little longer', 'gamma [[fake status=400]]',
      'delta [[fake words=7]]', 'epsilon'];
    const bodies = texts.map((t, i) => ({
      model: 'gpt-flag', messages: [{ role: 'user', content: `${t} #${i}` }],
    }));
    const jsonl = bodies.map((b, i) => JSON.stringify({
      custom_id: `req-${i}`, method: 'POST', url: '/v1/chat/completions', body: b,
    })).join('\n') + '\n';
    await fake.reset();

    const batch = await submitBatch(client, jsonl);
    const done = await waitEnd(client, batch.id);
    assert.equal(done.status, 'completed', JSON.stringify(done));
    assert.equal(done.request_counts.total, 5);
    assert.equal(done.request_counts.completed, 4);
    assert.equal(done.request_counts.failed, 1);

    // the fake saw provider batches, not per-line chat calls; every line ran exactly once
    const st = await fake.stats();
    assert.equal(st.chat, 0, 'no line went to the chat endpoint');
    assert.ok(st.batches >= 2, 'a batch was created and polled');
    assert.equal(st.batch_lines, 5);
    assert.equal(st.batch_line_dups, 0);
    assert.equal(Object.keys(st.batch_line_runs).length, 5);

    const out = await fileLines(client, done.output_file_id);
    const err = await fileLines(client, done.error_file_id);
    assert.equal(out.length, 4);
    assert.equal(err.length, 1);
    assert.equal(err[0].custom_id, 'req-2');
    assert.equal(err[0].response.status_code, 400);
    assert.ok(err[0].response.body.error.message);

    // a direct run of the same bodies through the proxy answers the same
    let expectCost = 0;
    for (const line of out) {
      const i = Number(line.custom_id.split('-')[1]);
      assert.equal(line.response.status_code, 200);
      const direct = await client.chat.completions.create(bodies[i]);
      const got = line.response.body;
      assert.equal(got.object, 'chat.completion');
      assert.equal(got.choices[0].message.content, direct.choices[0].message.content);
      assert.deepEqual(got.usage, direct.usage);
      expectCost += costMicro(PRICE, got.usage, PRICE.batch_discount);
    }

    // spend: the batch lines at the discount (the direct calls after them at full price)
    const st2 = await fake.stats();
    assert.equal(st2.chat, 4, 'only the direct run called the chat endpoint');
    let fullCost = 0;
    for (const line of out) fullCost += costMicro(PRICE, line.response.body.usage, 0);
    await waitFor(async () => {
      const g = await spendBy(proxy, 'gpt-flag');
      return g && g.cost_micro === expectCost + fullCost;
    }, { timeout: 15000, interval: 100, what: `spend ${expectCost} (discounted) + ${fullCost}` });
    assert.ok(expectCost > 0 && expectCost * 2 >= fullCost - 4 && expectCost * 2 <= fullCost + 4);
  });

  test('a client cancel cancels the provider batch in flight; its lines come back cancelled', async () => {
    const { fake, client } = ctx;
    const N = 6;
    await resetFake(fake);
    const batch = await submitBatch(client, chatLines('gpt-held', N, 'held'));
    // submitted and polled at least once: the provider batch is in flight
    await waitFor(async () => (await fake.stats()).batches >= 2,
      { timeout: 30000, interval: 50, what: 'the provider batch to be submitted and polled' });
    assert.equal((await providerCalls(fake)).creates.length, 1);
    const c = await client.batches.cancel(batch.id);
    assert.equal(c.status, 'cancelling');
    const done = await waitEnd(client, batch.id, 30000);
    assert.equal(done.status, 'cancelled', JSON.stringify(done));
    const calls = await providerCalls(fake);
    assert.equal(calls.cancels.length, 1, 'the provider batch was cancelled once');
    assert.equal(calls.creates.length, 1);
    const st = await fake.stats();
    assert.equal(st.batch_lines, 0, 'no line ran at the provider');
    // every line is in the error file, cancelled
    assert.equal(done.request_counts.total, N);
    assert.equal(done.request_counts.failed, N);
    assert.equal(done.output_file_id, null);
    const err = await fileLines(client, done.error_file_id);
    assert.deepEqual(err.map((l) => l.custom_id).sort(), Array.from({ length: N }, (_, i) => `held-${i}`).sort());
    for (const l of err) {
      assert.equal(l.response, null);
      assert.equal(l.error.code, 'batch_cancelled');
    }
  });
});

/* ------------------------------------------------------------------ real redis ------------- */

describe('provider batch across a restart (redis)', { skip: !haveRedis && 'redis-server not installed' }, () => {
  let fake, redis;

  before(async () => {
    fake = await startFake();
    redis = await startRedis();
  });

  after(async () => {
    await fake?.stop();
    await redis?.stop();
  });

  test('a restarted proxy resumes polling the saved provider batch: submitted once, completed', async (t) => {
    const N = 8;
    const dataDir = path.join(tmpDir(), `pb-restart-${process.pid}`);
    // pending at the provider until 12 polls were made: the restart happens in between
    const dep = fakeDeployment(fake, 'gpt-slow', {
      price: PRICE, batch_api: true, directives: { batch_polls: 12 },
    });
    const cfg = makeConfig({
      auth: { master_key_env: MASTER_ENV },
      redis: { url: `redis://127.0.0.1:${redis.port}`, key_prefix: `pb${redis.port}:` },
      data_dir: dataDir,
      deployments: [dep],
      batch: { poll_ms: 100, workers: 2, retry_base_ms: 10, lease_ms: 2000 },
    });
    const env = { [MASTER_ENV]: MASTER };
    await resetFake(fake);

    let proxy = await startProxy(cfg, { env });
    let client = proxy.client({ apiKey: MASTER });
    const batch = await submitBatch(client, chatLines('gpt-slow', N, 'rs'));
    // the provider batch is submitted and polled (its id saved) but not ended
    await waitFor(async () => (await fake.stats()).batches >= 2,
      { timeout: 30000, interval: 50, what: 'the provider batch to be submitted and polled' });
    const before = await fake.stats();
    assert.equal(before.batch_lines, 0, 'the provider batch ended before the restart');
    assert.equal((await providerCalls(fake)).creates.length, 1);
    proxy.kill(); // SIGKILL: nothing is cleaned up
    await proxy.exitPromise;
    t.diagnostic(`provider batch calls before the kill: ${before.batches}`);

    proxy = await startProxy(cfg, { env });
    try {
      client = proxy.client({ apiKey: MASTER });
      const done = await waitEnd(client, batch.id);
      assert.equal(done.status, 'completed', JSON.stringify(done));
      assert.equal(done.request_counts.completed, N);
      const after = await fake.stats();
      assert.ok(after.batches > before.batches, 'the restarted proxy polled the provider');
      // one provider batch: created once, each line run once
      assert.equal((await providerCalls(fake)).creates.length, 1, 'submitted once, not twice');
      assert.equal(after.batch_lines, N);
      assert.equal(Object.keys(after.batch_line_runs).length, N);
      assert.equal(after.batch_line_dups, 0);
      const out = await fileLines(client, done.output_file_id);
      assert.deepEqual(out.map((l) => l.custom_id).sort(), Array.from({ length: N }, (_, i) => `rs-${i}`).sort());
      for (const l of out) assert.equal(l.response.status_code, 200);
    } finally {
      await assertCleanExit(proxy);
    }
  });
});

/* ------------------------------------------------------------------ group size ------------- */

describe('provider batch group size', () => {
  const ctx = withProxy((fake) => ({
    deployments: [fakeDeployment(fake, 'gpt-grp', { price: PRICE, batch_api: true })],
    batch: { poll_ms: 200, workers: 2, retry_base_ms: 10, provider_group_size: 3 },
  }));

  test('batch.provider_group_size caps the lines of one provider batch', async () => {
    const { fake, client } = ctx;
    const N = 10;
    await resetFake(fake);
    const batch = await submitBatch(client, chatLines('gpt-grp', N, 'grp'));
    const done = await waitEnd(client, batch.id);
    assert.equal(done.status, 'completed', JSON.stringify(done));
    assert.equal(done.request_counts.completed, N);
    const log = (await request(fake.url, 'GET', '/_reqlog')).json();
    const uploads = log.requests.filter((r) => /\/files$/.test(r.path))
      .map((r) => (r.body.match(/"custom_id"/g) || []).length);
    const { creates } = await providerCalls(fake);
    assert.equal(creates.length, uploads.length);
    assert.ok(creates.length >= Math.ceil(N / 3), `${creates.length} provider batches`);
    assert.equal(uploads.reduce((a, b) => a + b, 0), N, `lines per upload: ${uploads}`);
    assert.ok(Math.max(...uploads) <= 3, `lines per upload: ${uploads}`);
    assert.equal((await fake.stats()).batch_line_dups, 0);
  });
});

/* ------------------------------------------------------------------ expiry ---------------- */

const ANTH_KEY_ENV = 'SY_PB_TEST_ANTH_KEY';

/** Provider batches created and cancelled so far, both APIs (OpenAI: {input_file_id} bodies;
 * Anthropic: {requests} bodies to .../messages/batches). */
async function providerCallsAny(fake) {
  const log = (await request(fake.url, 'GET', '/_reqlog')).json();
  const creates = log.requests.filter((r) => (/\/batches$/.test(r.path) && r.body.includes('input_file_id')) ||
    (/\/messages\/batches$/.test(r.path) && r.body.includes('"requests"')));
  const cancels = log.requests.filter((r) => /\/batches\/[^/]+\/cancel$/.test(r.path));
  return { creates, cancels };
}

describe('provider batch expiry', () => {
  // pending at the provider until cancelled; a cancel still returns the 2 lines that ran
  const held = { batch_polls: 100000, batch_cancel_keep: 2 };
  const ctx = withProxy((fake) => ({
    deployments: [
      fakeDeployment(fake, 'gpt-exp', { price: PRICE, batch_api: true, directives: held }),
      {
        name: 'claude-exp', provider: 'anthropic', base_url: fake.base(held), model: 'claude-exp',
        api_key_env: ANTH_KEY_ENV, price: PRICE, batch_api: true,
      },
    ],
    // default provider_grace_ms (15 min): the batch waits for the provider's answer
    batch: { poll_ms: 50, workers: 2, retry_base_ms: 10, window_s: 4 },
    env: { [ANTH_KEY_ENV]: 'sk-ant-test' },
  }));

  for (const model of ['gpt-exp', 'claude-exp']) {
    test(`${model}: an expired batch cancels its provider batch and keeps what the provider completed`, async () => {
      const { fake, proxy, client } = ctx;
      const N = 5;
      await resetFake(fake);
      const batch = await submitBatch(client, chatLines(model, N, 'exp'));
      const done = await waitEnd(client, batch.id);
      assert.equal(done.status, 'expired', JSON.stringify(done));
      const calls = await providerCallsAny(fake);
      assert.equal(calls.creates.length, 1, 'one provider batch');
      assert.equal(calls.cancels.length, 1, 'the expiry cancelled it at the provider');
      const st = await fake.stats();
      assert.equal(st.batch_lines, 2, 'the provider ran 2 lines before the cancel');
      assert.equal(st.batch_line_dups, 0);

      // what the provider completed is in the output file; the rest is batch_expired
      const out = await fileLines(client, done.output_file_id);
      const err = await fileLines(client, done.error_file_id);
      assert.equal(out.length, 2, JSON.stringify(done));
      for (const l of out) {
        assert.equal(l.response.status_code, 200);
        assert.equal(l.response.body.object, 'chat.completion');
      }
      assert.equal(err.length, N - 2);
      for (const l of err) {
        assert.equal(l.response, null);
        assert.equal(l.error.code, 'batch_expired');
      }
      assert.deepEqual([...out, ...err].map((l) => l.custom_id).sort(),
        Array.from({ length: N }, (_, i) => `exp-${i}`).sort());
      assert.equal(done.request_counts.completed, 2);
      assert.equal(Object.keys(st.batch_line_runs).length, 2);

      // billed: exactly the two answers the client can read, at the batch discount
      const expectCost = out.reduce((a, l) => a + costMicro(PRICE, l.response.body.usage, PRICE.batch_discount), 0);
      assert.ok(expectCost > 0);
      await waitFor(async () => {
        const g = await spendBy(proxy, model);
        return g && g.cost_micro === expectCost;
      }, { timeout: 15000, interval: 100, what: `spend of ${model} = ${expectCost}` });
    });
  }
});

describe('provider batch expiry grace', () => {
  const ctx = withProxy((fake) => ({
    deployments: [
      // the provider takes 60 retrieves to honour the cancel, far past the proxy's grace of
      // 300 ms (each sweep, one retrieve, is at least poll_ms = 50 ms apart)
      fakeDeployment(fake, 'gpt-late', {
        price: PRICE, batch_api: true,
        directives: { batch_polls: 100000, batch_cancel_keep: 2, batch_cancel_polls: 60 },
      }),
      fakeDeployment(fake, 'gpt-quick', { price: PRICE, batch_api: true }),
    ],
    batch: { poll_ms: 50, workers: 2, retry_base_ms: 10, window_s: 4, provider_grace_ms: 300 },
  }));

  test('a provider that answers after the grace cannot hold the batch; its late answers are not billed', async () => {
    const { fake, proxy, client } = ctx;
    const N = 5;
    await resetFake(fake);
    const batch = await submitBatch(client, chatLines('gpt-late', N, 'late'));
    const done = await waitEnd(client, batch.id);
    assert.equal(done.status, 'expired', JSON.stringify(done));
    assert.equal((await providerCallsAny(fake)).cancels.length, 1);
    assert.equal((await fake.stats()).batch_lines, 0, 'ended before the provider answered');
    assert.equal(done.output_file_id, null);
    const err = await fileLines(client, done.error_file_id);
    assert.deepEqual(err.map((l) => l.custom_id).sort(), Array.from({ length: N }, (_, i) => `late-${i}`).sort());
    for (const l of err) assert.equal(l.error.code, 'batch_expired');

    // the provider ends its cancelled batch later, with 2 lines that ran
    await waitFor(async () => (await fake.stats()).batch_lines === 2,
      { timeout: 60000, interval: 100, what: 'the provider to end the cancelled batch' });
    // a batch submitted after that is polled after the late answers were merged (one sweeper
    // does both in order): once its spend shows, so would the late lines' spend
    const b2 = await submitBatch(client, chatLines('gpt-quick', 1, 'q'));
    const done2 = await waitEnd(client, b2.id);
    assert.equal(done2.status, 'completed', JSON.stringify(done2));
    const q = (await fileLines(client, done2.output_file_id))[0];
    const qCost = costMicro(PRICE, q.response.body.usage, PRICE.batch_discount);
    await waitFor(async () => {
      const g = await spendBy(proxy, 'gpt-quick');
      return g && g.cost_micro === qCost;
    }, { timeout: 15000, interval: 100, what: 'the later batch\'s spend' });
    const lateSpend = await spendBy(proxy, 'gpt-late');
    assert.ok(!lateSpend || lateSpend.cost_micro === 0, `late answers billed: ${JSON.stringify(lateSpend)}`);
    // the batch is as it ended: nothing counted or written after it
    const again = await client.batches.retrieve(batch.id);
    assert.deepEqual(again.request_counts, done.request_counts);
    assert.equal(again.output_file_id, null);
    assert.equal(again.error_file_id, done.error_file_id);
  });
});
