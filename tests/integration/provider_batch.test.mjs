// Provider batch API (issue 7 item 4, DESIGN §9): a /v1/batches batch whose lines route to a
// deployment with "batch_api": true goes to the fake's OpenAI Batches API as one provider batch
// (no per-line chat calls), every line runs there exactly once, the output and error files equal
// a direct run line by line, and spend prices those lines with the deployment's batch discount.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { toFile } from 'openai';
import {
  startFake, startProxy, makeConfig, fakeDeployment, assertCleanExit, request, waitFor,
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

describe('provider batch API', () => {
  let fake, proxy, client;

  before(async () => {
    fake = await startFake();
    const flag = fakeDeployment(fake, 'gpt-flag', { price: PRICE, batch_api: true });
    proxy = await startProxy(makeConfig({
      auth: { master_key_env: MASTER_ENV },
      deployments: [flag],
      batch: { poll_ms: 50, workers: 2, retry_base_ms: 10 },
    }), { env: { [MASTER_ENV]: MASTER } });
    client = proxy.client({ apiKey: MASTER });
  });

  after(async () => {
    await proxy?.stop();
    await fake?.stop();
    await assertCleanExit(proxy);
  });

  test('lines go out as one provider batch and come back equal to a direct run', async () => {
    const texts = ['alpha line', 'beta line, a little longer', 'gamma [[fake status=400]]',
      'delta [[fake words=7]]', 'epsilon'];
    const bodies = texts.map((t, i) => ({
      model: 'gpt-flag', messages: [{ role: 'user', content: `${t} #${i}` }],
    }));
    const jsonl = bodies.map((b, i) => JSON.stringify({
      custom_id: `req-${i}`, method: 'POST', url: '/v1/chat/completions', body: b,
    })).join('\n') + '\n';
    await fake.reset();

    const f = await client.files.create({ file: await toFile(Buffer.from(jsonl), 'in.jsonl'), purpose: 'batch' });
    const batch = await client.batches.create({
      input_file_id: f.id, endpoint: '/v1/chat/completions', completion_window: '24h',
    });
    let done;
    await waitFor(async () => {
      done = await client.batches.retrieve(batch.id);
      return ['completed', 'failed', 'expired', 'cancelled'].includes(done.status);
    }, { timeout: 60000, interval: 100, what: 'the batch to end' });
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

    const out = (await (await client.files.content(done.output_file_id)).text())
      .trim().split('\n').map((l) => JSON.parse(l));
    const err = (await (await client.files.content(done.error_file_id)).text())
      .trim().split('\n').map((l) => JSON.parse(l));
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
});
