// Batches API (issue 7) through the official openai SDK: files.create + batches.create + poll
// batches.retrieve until completed + files.content of the output and error files; results match a
// direct run line by line; objects validate against the spec (nulls allowed for unset fields);
// invalid inputs fail in `validating` with line-numbered errors; cancel mid-run; batch lines keep
// to their share of a deployment so interactive requests still run; and, on a real redis-server,
// SIGKILL in the middle of a 2,000-line batch and two instances sharing one batch: every
// custom_id exactly once, and the fake upstream's request log shows no line run twice except the
// ones in flight at the kill (at most one per worker).
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { toFile } from 'openai';
import {
  startFake, startProxy, makeConfig, fakeDeployment, assertCleanExit, waitFor, request, post,
  chatBody, tmpDir, errorOf, haveRedis, startRedis, fileLines,
} from './lib/harness.mjs';
import { assertSchema } from './lib/schema.mjs';

const EP = '/v1/chat/completions';
// Batches and files belong to the tenant of the key that made them: raw requests carry the SDK
// client's key (the harness default).
const AUTH = { authorization: 'Bearer sk-client-key-must-not-leak' };
const FAST = { poll_ms: 50, lease_ms: 3000, retry_base_ms: 50, max_attempts: 3 };

function line(i, text = `line-${i}`, extra = {}) {
  return { custom_id: `c-${i}`, method: 'POST', url: EP, body: chatBody('fake-small', text, extra) };
}
const jsonl = (lines) => lines.map((l) => (typeof l === 'string' ? l : JSON.stringify(l))).join('\n') + '\n';

// The spec's Batch has non-nullable timestamps and file ids; OpenAI sends null while unset.
function validateBatch(b, what) {
  const copy = Object.fromEntries(Object.entries(b).filter(([, v]) => v !== null));
  return assertSchema('Batch', copy, what);
}

async function uploadBatch(client, lines) {
  return client.files.create({ file: await toFile(Buffer.from(jsonl(lines)), 'in.jsonl'), purpose: 'batch' });
}

async function waitBatch(client, id, statuses, timeout = 60000) {
  return waitFor(async () => {
    const b = await client.batches.retrieve(id);
    return statuses.includes(b.status) ? b : null;
  }, { timeout, interval: 50, what: `batch ${id} to reach ${statuses.join('|')}` });
}

// Custom ids -> how many times the fake saw the line (marker "line-<i>" in the user message).
async function upstreamRuns(fake) {
  const log = (await request(fake.url, 'GET', '/_reqlog')).json();
  const runs = new Map();
  for (const r of log.requests) {
    const m = r.body.match(/line-(\d+)/);
    if (m) runs.set(m[1], (runs.get(m[1]) || 0) + 1);
  }
  return runs;
}

describe('batches, embedded store', () => {
  let fake;
  let proxy;
  let client;

  before(async () => {
    fake = await startFake();
    proxy = await startProxy(makeConfig({
      deployments: [
        fakeDeployment(fake, 'fake-small'),
        fakeDeployment(fake, 'slow', { model: 'fake-small', max_inflight: 4 }),
        fakeDeployment(fake, 'flaky', { model: 'fake-small' }),
      ],
      batch: { ...FAST, workers: 8 },
    }));
    client = proxy.client();
  });

  after(async () => {
    await assertCleanExit(proxy);
    await fake?.stop();
  });

  test('a batch completes; output and error files match a direct run line by line', async () => {
    const lines = [];
    for (let i = 1; i <= 12; i++) lines.push(line(i));
    lines.push(line(13, 'line-13 [[fake status=400]]')); // a client error: error file, no retry
    // transient, retried, then error file (its own deployment: its breaker opens, not fake-small's)
    lines.push({ ...line(14), body: chatBody('flaky', 'line-14 [[fake status=503]]') });
    lines.push({ ...line(15), body: chatBody('no-such-model', 'line-15') }); // 404 from the proxy
    const file = await uploadBatch(client, lines);
    const created = await client.batches.create({
      input_file_id: file.id, endpoint: EP, completion_window: '24h', metadata: { run: 'one' },
    });
    assert.equal(created.status, 'validating');
    assert.match(created.id, /^batch_/);
    validateBatch(created, 'created batch');

    const done = await waitBatch(client, created.id, ['completed', 'failed', 'expired']);
    validateBatch(done, 'completed batch');
    assert.equal(done.status, 'completed');
    assert.deepEqual(done.request_counts, { total: 15, completed: 12, failed: 3 });
    assert.deepEqual(done.metadata, { run: 'one' });
    for (const k of ['in_progress_at', 'finalizing_at', 'completed_at']) assert.equal(typeof done[k], 'number', k);
    assert.ok(done.usage.input_tokens > 0 && done.usage.output_tokens > 0);

    const out = await fileLines(client, done.output_file_id);
    const err = await fileLines(client, done.error_file_id);
    assert.deepEqual(out.map((l) => l.custom_id), lines.slice(0, 12).map((l) => l.custom_id));
    assert.deepEqual(err.map((l) => l.custom_id), ['c-13', 'c-14', 'c-15']);
    for (const l of [...out, ...err]) assert.match(l.id, /^batch_req_/);
    assert.deepEqual(err.map((l) => l.response.status_code), [400, 503, 404]);
    for (const l of err) {
      assert.equal(l.error, null);
      assert.ok(l.response.body.error, 'the error response body is kept');
    }
    // the 503 line was retried: batch.max_attempts proxied requests (each may make its own
    // fallback attempts upstream, until the flaky deployment's breaker opens); the 400 line once
    const runs = await upstreamRuns(fake);
    assert.ok(runs.get('14') >= FAST.max_attempts, `line 14 ran ${runs.get('14')} times`);
    assert.equal(runs.get('13'), 1);

    // a direct run of every line gives the same answers
    for (const [i, l] of out.entries()) {
      assert.equal(l.response.status_code, 200);
      assert.equal(l.error, null);
      const direct = await client.chat.completions.create(lines[i].body);
      assert.deepEqual(l.response.body.choices, direct.choices, `line ${i + 1}`);
      assert.equal(l.response.body.model, direct.model);
    }

    // list: newest first, with the OpenAI list shape
    const second = await client.batches.create({ input_file_id: file.id, endpoint: EP, completion_window: '24h' });
    const page = await client.batches.list({ limit: 1 });
    assert.equal(page.data.length, 1);
    assert.equal(page.data[0].id, second.id);
    assert.equal(page.has_more, true);
    const raw = (await request(proxy.url, 'GET', `/v1/batches?limit=1&after=${second.id}`, { headers: AUTH })).json();
    assert.equal(raw.object, 'list');
    assert.equal(raw.data[0].id, created.id);
    assertSchema('ListBatchesResponse', { ...raw, data: raw.data.map((b) => Object.fromEntries(Object.entries(b).filter(([, v]) => v !== null))) });
    await waitBatch(client, second.id, ['completed']);

    // metrics
    const m = (await request(proxy.url, 'GET', '/metrics')).text;
    assert.match(m, /switchyard_batch_lines_total\{result="completed"\} (\d+)/);
    assert.ok(Number(m.match(/switchyard_batch_lines_total\{result="completed"\} (\d+)/)[1]) >= 24);
    assert.match(m, /switchyard_batch_queue_depth \d+/);
    assert.match(m, /switchyard_batches\{status="completed"\} [1-9]/);
  });

  test('invalid input fails in validating with line-numbered errors', async () => {
    const lines = [
      line(1),
      '{"custom_id": "c-2", "method": "POST", "url": "/v1/chat/completions", "body": {', // bad JSON
      '',
      line(1), // duplicate custom_id (line 4)
      { ...line(5), method: 'GET' },
      { ...line(6), url: '/v1/embeddings' },
      { method: 'POST', url: EP, body: {} }, // no custom_id
    ];
    const file = await uploadBatch(client, lines);
    const b = await client.batches.create({ input_file_id: file.id, endpoint: EP, completion_window: '24h' });
    const failed = await waitBatch(client, b.id, ['failed', 'in_progress', 'completed']);
    assert.equal(failed.status, 'failed');
    validateBatch(failed, 'failed batch');
    assert.equal(typeof failed.failed_at, 'number');
    assert.equal(failed.errors.object, 'list');
    assert.deepEqual(failed.errors.data.map((e) => [e.line, e.code]), [
      [2, 'invalid_json_line'], [4, 'duplicate_custom_id'], [5, 'invalid_method'],
      [6, 'invalid_url'], [7, 'missing_custom_id'],
    ]);
    for (const e of failed.errors.data) assertSchema('BatchError', e);

    // request errors are OpenAI-shaped
    const bad = await post(proxy.url, '/v1/batches', { input_file_id: 'file-nope', endpoint: EP, completion_window: '24h' });
    assert.equal(bad.status, 400);
    assert.equal(errorOf(bad).param, 'input_file_id');
    const win = await post(proxy.url, '/v1/batches', { input_file_id: file.id, endpoint: EP, completion_window: '1h' }, { headers: AUTH });
    assert.equal(errorOf(win).param, 'completion_window');
    const ep = await post(proxy.url, '/v1/batches', { input_file_id: file.id, endpoint: '/v1/images', completion_window: '24h' }, { headers: AUTH });
    assert.equal(errorOf(ep).param, 'endpoint');
    const missing = await request(proxy.url, 'GET', '/v1/batches/batch_doesnotexist');
    assert.equal(missing.status, 404);
    errorOf(missing);
    const method = await request(proxy.url, 'DELETE', `/v1/batches/${b.id}`, { headers: AUTH });
    assert.equal(method.status, 405);
    assert.equal(method.headers.allow, 'GET');
  });

  test('cancel mid-run: cancelling, then cancelled with the finished lines only', async () => {
    const lines = [];
    for (let i = 100; i < 160; i++) lines.push(line(i, `line-${i} [[fake first_byte_ms=150]]`));
    const file = await uploadBatch(client, lines);
    const b = await client.batches.create({ input_file_id: file.id, endpoint: EP, completion_window: '24h' });
    await waitFor(async () => (await client.batches.retrieve(b.id)).request_counts.completed >= 4,
      { timeout: 60000, what: 'a few lines to finish' });
    const c = await client.batches.cancel(b.id);
    assert.equal(c.status, 'cancelling');
    const end = await waitBatch(client, b.id, ['cancelled']);
    validateBatch(end, 'cancelled batch');
    assert.equal(typeof end.cancelling_at, 'number');
    assert.equal(typeof end.cancelled_at, 'number');
    const out = await fileLines(client, end.output_file_id);
    assert.equal(out.length, end.request_counts.completed);
    assert.ok(out.length < 60, `cancel came too late to test anything (${out.length} lines done)`);
    assert.equal(new Set(out.map((l) => l.custom_id)).size, out.length);
    // nothing runs after the cancel ended
    const before = (await upstreamRuns(fake)).size;
    await new Promise((r) => setTimeout(r, 400));
    assert.equal((await upstreamRuns(fake)).size, before);
    const again = await post(proxy.url, `/v1/batches/${b.id}/cancel`, '', { headers: AUTH });
    assert.equal(again.status, 200);
  });

  test('tenancy: another key cannot see, cancel or read a batch, its input or its output', async () => {
    const a = proxy.client({ apiKey: 'sk-batch-tenant-a' });
    const b = proxy.client({ apiKey: 'sk-batch-tenant-b' });
    const file = await uploadBatch(a, [line(300), line(301, 'line-301 [[fake status=400]]')]);
    // B cannot start a batch on A's file: as if it did not exist
    await assert.rejects(b.batches.create({ input_file_id: file.id, endpoint: EP, completion_window: '24h' }),
      (e) => e.status === 400 && e.param === 'input_file_id');
    const ba = await a.batches.create({ input_file_id: file.id, endpoint: EP, completion_window: '24h' });
    await assert.rejects(b.batches.retrieve(ba.id), (e) => e.status === 404);
    await assert.rejects(b.batches.cancel(ba.id), (e) => e.status === 404);
    const raw = await request(proxy.url, 'GET', `/v1/batches/${ba.id}`, { headers: { authorization: 'Bearer sk-batch-tenant-b' } });
    assert.equal(raw.status, 404);
    assert.equal(errorOf(raw).type, 'invalid_request_error');
    assert.equal((await request(proxy.url, 'GET', `/v1/batches/${ba.id}`)).status, 404); // no key
    const end = await waitBatch(a, ba.id, ['completed']);
    assert.equal(end.request_counts.completed, 1);
    assert.equal(end.request_counts.failed, 1);
    // lists: A sees its batch, B and the default client do not; A's id is no cursor for B
    const ids = async (c) => { const out = []; for await (const x of c.batches.list({ limit: 100 })) out.push(x.id); return out; };
    assert.ok((await ids(a)).includes(ba.id));
    assert.ok(!(await ids(b)).includes(ba.id));
    assert.ok(!(await ids(client)).includes(ba.id));
    assert.deepEqual((await b.batches.list({ after: ba.id })).data, []);
    // the output and error files belong to A
    assert.equal((await fileLines(a, end.output_file_id))[0].custom_id, 'c-300');
    assert.equal((await fileLines(a, end.error_file_id))[0].custom_id, 'c-301');
    for (const id of [end.output_file_id, end.error_file_id, file.id]) {
      await assert.rejects(b.files.retrieve(id), (e) => e.status === 404);
      await assert.rejects(b.files.content(id), (e) => e.status === 404);
    }
    assert.ok(!(await b.files.list()).data.some((f) => f.id === end.output_file_id));
    assert.ok((await a.files.list()).data.some((f) => f.id === end.output_file_id));
    // still A's after B's attempts
    assert.equal((await a.batches.retrieve(ba.id)).status, 'completed');
  });

  test('a batch saturating a deployment leaves room for interactive requests', async () => {
    // "slow" has max_inflight 4: batch lines get floor(0.5 * 4) = 2 of them with 8 workers
    const lines = [];
    for (let i = 200; i < 240; i++) {
      lines.push({ ...line(i, `line-${i} [[fake first_byte_ms=100]]`), body: chatBody('slow', `line-${i} [[fake first_byte_ms=100]]`) });
    }
    const file = await uploadBatch(client, lines);
    const b = await client.batches.create({ input_file_id: file.id, endpoint: EP, completion_window: '24h' });
    await waitFor(async () => (await client.batches.retrieve(b.id)).request_counts.completed >= 2,
      { timeout: 60000, what: 'the batch to be running' });
    let maxInflight = 0;
    for (let k = 0; k < 10; k++) {
      const [r1, r2, m] = await Promise.all([
        post(proxy.url, '/v1/chat/completions', chatBody('slow', `interactive ${k} [[fake first_byte_ms=100]]`)),
        post(proxy.url, '/v1/chat/completions', chatBody('slow', `interactive b${k} [[fake first_byte_ms=100]]`)),
        request(proxy.url, 'GET', '/metrics'),
      ]);
      assert.equal(r1.status, 200, r1.text);
      assert.equal(r2.status, 200, r2.text);
      const g = m.text.match(/switchyard_deployment_inflight\{deployment="slow"\} (\d+)/);
      if (g) maxInflight = Math.max(maxInflight, Number(g[1]));
    }
    assert.ok(maxInflight <= 4, `in flight ${maxInflight}`);
    const end = await waitBatch(client, b.id, ['completed'], 120000);
    assert.equal(end.request_counts.completed, 40);
  });
});

describe('batch expiry', () => {
  let fake;
  let proxy;

  before(async () => {
    fake = await startFake();
    proxy = await startProxy(makeConfig({
      deployments: [fakeDeployment(fake, 'fake-small')],
      batch: { ...FAST, workers: 2, window_s: 2 },
    }));
  });

  after(async () => {
    await assertCleanExit(proxy);
    await fake?.stop();
  });

  test('past its window a batch expires: finished lines kept, the rest batch_expired', async () => {
    const client = proxy.client();
    const lines = [];
    for (let i = 300; i < 340; i++) lines.push(line(i, `line-${i} [[fake first_byte_ms=250]]`));
    const file = await uploadBatch(client, lines);
    const b = await client.batches.create({ input_file_id: file.id, endpoint: EP, completion_window: '24h' });
    assert.equal(b.expires_at - b.created_at, 2);
    const end = await waitBatch(client, b.id, ['expired', 'completed'], 60000);
    assert.equal(end.status, 'expired');
    validateBatch(end, 'expired batch');
    assert.equal(typeof end.expired_at, 'number');
    const out = await fileLines(client, end.output_file_id);
    const err = await fileLines(client, end.error_file_id);
    assert.equal(out.length, end.request_counts.completed);
    assert.ok(out.length > 0 && out.length < 40, `${out.length} lines finished`);
    assert.equal(out.length + err.length, 40);
    for (const l of err) {
      assert.equal(l.response, null);
      assert.equal(l.error.code, 'batch_expired');
    }
    const ids = [...out, ...err].map((l) => l.custom_id).sort();
    assert.deepEqual(ids, lines.map((l) => l.custom_id).sort());
  });
});

/* ------------------------------------------------------------------ real redis ------------- */

describe('batches on redis', { skip: !haveRedis && 'redis-server not installed' }, () => {
  let fake;
  let redis;

  before(async () => {
    fake = await startFake();
    redis = await startRedis();
  });

  after(async () => {
    await fake?.stop();
    await redis?.stop();
  });

  function redisConfig(dataDir, workers) {
    return makeConfig({
      redis: { url: `redis://127.0.0.1:${redis.port}`, pool: 12, key_prefix: `t${redis.port}:` },
      data_dir: dataDir,
      deployments: [fakeDeployment(fake, 'fake-small')],
      batch: { ...FAST, lease_ms: 2000, workers },
    });
  }

  test('SIGKILL mid-batch and restart: every custom_id exactly once, no line run twice but those in flight', async (t) => {
    const N = 2000;
    const WORKERS = 4;
    await request(fake.url, 'POST', '/_reqlog', { body: '' });
    const dataDir = path.join(tmpDir(), 'crash-data');
    const cfg = redisConfig(dataDir, WORKERS);
    let proxy = await startProxy(cfg);
    let client = proxy.client();
    const lines = [];
    for (let i = 1; i <= N; i++) lines.push(line(i, `line-${i} [[fake first_byte_ms=2]]`));
    const file = await uploadBatch(client, lines);
    const b = await client.batches.create({ input_file_id: file.id, endpoint: EP, completion_window: '24h' });
    await waitFor(async () => (await client.batches.retrieve(b.id)).request_counts.completed >= 300,
      { timeout: 120000, interval: 20, what: '300 lines to finish' });
    proxy.kill(); // SIGKILL
    await proxy.exitPromise;
    const atKill = (await upstreamRuns(fake)).size;
    assert.ok(atKill < N, `the batch finished before the kill (${atKill} lines)`);

    proxy = await startProxy(cfg);
    client = proxy.client();
    const end = await waitBatch(client, b.id, ['completed', 'failed', 'expired'], 240000);
    assert.equal(end.status, 'completed');
    assert.deepEqual(end.request_counts, { total: N, completed: N, failed: 0 });
    const out = await fileLines(client, end.output_file_id);
    const err = await fileLines(client, end.error_file_id);
    const ids = [...out, ...err].map((l) => l.custom_id);
    assert.equal(ids.length, N);
    assert.equal(new Set(ids).size, N);
    assert.deepEqual(out.map((l) => l.custom_id), lines.map((l) => l.custom_id)); // line order

    const runs = await upstreamRuns(fake);
    assert.equal(runs.size, N, 'every line reached the upstream');
    const twice = [...runs.entries()].filter(([, n]) => n > 1);
    // documented: a line in flight at the kill runs again after the restart (one per worker)
    assert.ok(twice.length <= WORKERS, `lines run twice: ${JSON.stringify(twice)}`);
    for (const [, n] of twice) assert.equal(n, 2);
    t.diagnostic(`lines at the upstream when killed: ${atKill}; run twice: ${twice.length}`);
    await assertCleanExit(proxy);
  });

  test('two instances on one Redis process one batch together with no line twice', async () => {
    await request(fake.url, 'POST', '/_reqlog', { body: '' });
    // separate data_dirs (each has its own spend journal) sharing the files directory
    const a = path.join(tmpDir(), 'two-a');
    const bdir = path.join(tmpDir(), 'two-b');
    fs.mkdirSync(path.join(a, 'files'), { recursive: true });
    fs.mkdirSync(bdir, { recursive: true });
    fs.symlinkSync(path.join(a, 'files'), path.join(bdir, 'files'));
    const p1 = await startProxy(redisConfig(a, 2));
    const p2 = await startProxy(redisConfig(bdir, 2));
    try {
      const c1 = p1.client();
      const N = 300;
      const lines = [];
      for (let i = 5001; i <= 5000 + N; i++) lines.push(line(i, `line-${i} [[fake first_byte_ms=5]]`));
      const file = await uploadBatch(c1, lines);
      const b = await c1.batches.create({ input_file_id: file.id, endpoint: EP, completion_window: '24h' });
      const end = await waitBatch(p2.client(), b.id, ['completed', 'failed'], 120000);
      assert.equal(end.status, 'completed');
      assert.deepEqual(end.request_counts, { total: N, completed: N, failed: 0 });
      const out = await fileLines(c1, end.output_file_id);
      assert.equal(new Set(out.map((l) => l.custom_id)).size, N);
      const runs = await upstreamRuns(fake);
      const mine = [...runs.entries()].filter(([k]) => Number(k) > 5000);
      assert.equal(mine.length, N);
      assert.deepEqual(mine.filter(([, n]) => n !== 1), []);
      // both instances ran lines
      for (const p of [p1, p2]) {
        const m = (await request(p.url, 'GET', '/metrics')).text;
        const done = Number(m.match(/switchyard_batch_lines_total\{result="completed"\} (\d+)/)[1]);
        assert.ok(done > 0, `${p.url} ran no line`);
      }
    } finally {
      await assertCleanExit(p1);
      await assertCleanExit(p2);
    }
  });
});
