// Integration harness: runs the real switchyard binary and the fake upstream on free ports.
//
// - Processes are started with port 0 and we parse the "listening on HOST:PORT" line they print.
// - Every wait polls against a deadline; nothing sleeps a fixed time and hopes.
// - stderr is collected (bounded) and attached to failures so a broken run explains itself.
// - stop() sends SIGTERM and returns the exit code: under ASan a leak makes it non-zero, so every
//   test file asserts exit code 0 on shutdown.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import OpenAI from 'openai';

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const SOURCE_DIR = process.env.SY_SOURCE_DIR || path.resolve(HERE, '../../..');
export const SY_BIN = process.env.SY_BIN || path.join(SOURCE_DIR, 'build', 'switchyard');
export const FAKE_BIN = process.env.SY_FAKE_BIN || path.join(SOURCE_DIR, 'build', 'fake_upstream');

const STDERR_CAP = 1 << 20;

// A leak found by LeakSanitizer exits with 23, so it is told apart from an expected exit 1
// (e.g. `switchyard check` on a bad config).
export const LEAK_EXIT = 23;
const SAN_ENV = { LSAN_OPTIONS: process.env.LSAN_OPTIONS || `exitcode=${LEAK_EXIT}` };
const children = new Set();
process.on('exit', () => {
  for (const c of children) {
    try { c.kill('SIGKILL'); } catch { /* already gone */ }
  }
});

let tmpRoot = null;
/** A private temp directory for this test process, removed at exit. */
export function tmpDir() {
  if (!tmpRoot) {
    tmpRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'sy-it-'));
    process.on('exit', () => fs.rmSync(tmpRoot, { recursive: true, force: true }));
  }
  return tmpRoot;
}

let seq = 0;
/** Writes <obj> (or a string) as a config file; returns its path. */
export function writeConfig(obj, name) {
  const p = path.join(tmpDir(), name || `config-${process.pid}-${++seq}.json`);
  fs.writeFileSync(p, typeof obj === 'string' ? obj : JSON.stringify(obj, null, 2));
  return p;
}

/** Resolves after <ms> milliseconds (used only between polls of a condition with a deadline). */
export const delay = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls fn() until it returns a truthy value or the deadline passes; returns that value. */
export async function waitFor(fn, { timeout = 10000, interval = 25, what = 'condition' } = {}) {
  const end = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > end) {
      throw new Error(`timed out after ${timeout} ms waiting for ${what}` +
        (last instanceof Error ? `: ${last.message}` : last !== undefined ? ` (last: ${JSON.stringify(last)})` : ''));
    }
    await delay(interval);
  }
}

/** A running child process that announced "listening on HOST:PORT". */
class Server {
  constructor(name, proc) {
    this.name = name;
    this.proc = proc;
    this.pid = proc.pid;
    this.stdout = '';
    this.stderrBuf = '';
    this.exited = null; // {code, signal} once it exits
    this.exitPromise = new Promise((resolve) => {
      proc.on('exit', (code, signal) => {
        this.exited = { code, signal };
        children.delete(proc);
        resolve(this.exited);
      });
    });
    proc.stderr.setEncoding('utf8');
    proc.stderr.on('data', (d) => {
      if (this.stderrBuf.length < STDERR_CAP) this.stderrBuf += d;
    });
    proc.stdout.setEncoding('utf8');
    proc.stdout.on('data', (d) => {
      if (this.stdout.length < STDERR_CAP) this.stdout += d;
    });
  }

  stderr() { return this.stderrBuf; }

  /** Waits for the "listening on HOST:PORT" line (or the process dying). */
  async ready(timeout = 30000) {
    const m = await waitFor(() => {
      if (this.exited) {
        throw Object.assign(new Error(`${this.name} exited (${JSON.stringify(this.exited)}) before listening`), { fatal: true });
      }
      return this.stdout.match(/listening on (\S+):(\d+)/);
    }, { timeout, interval: 10, what: `${this.name} to print "listening on"` }).catch((e) => {
      this.kill();
      throw new Error(`${e.message}\n--- ${this.name} stdout ---\n${this.stdout}\n--- ${this.name} stderr ---\n${this.stderrBuf.slice(-8000)}`);
    });
    this.host = m[1];
    this.port = Number(m[2]);
    this.url = `http://${this.host}:${this.port}`;
    return this;
  }

  kill() {
    if (!this.exited) {
      try { this.proc.kill('SIGKILL'); } catch { /* gone */ }
    }
  }

  /** Number of threads of the process (from /proc/PID/status). */
  threads() {
    const s = fs.readFileSync(`/proc/${this.pid}/status`, 'utf8');
    return Number(s.match(/^Threads:\s+(\d+)/m)[1]);
  }

  /** SIGTERM, then waits up to <timeout> ms; returns the exit code (a signal death -> 128+n,
   *  a hang -> SIGKILL and an Error). */
  async stop(timeout = 30000) {
    if (!this.exited) this.proc.kill('SIGTERM');
    let timer;
    const res = await Promise.race([
      this.exitPromise,
      new Promise((r) => { timer = setTimeout(() => r(null), timeout); }),
    ]);
    clearTimeout(timer);
    if (res === null) {
      this.kill();
      await this.exitPromise;
      throw new Error(`${this.name} did not exit within ${timeout} ms of SIGTERM\n--- stderr ---\n${this.stderrBuf.slice(-8000)}`);
    }
    if (res.code !== null) return res.code;
    return 128 + (os.constants.signals[res.signal] || 0);
  }
}

function spawnServer(name, bin, args, env, cwd) {
  if (!fs.existsSync(bin)) throw new Error(`${name} binary not found: ${bin} (set SY_BIN / SY_FAKE_BIN)`);
  const proc = spawn(bin, args, {
    cwd,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ...SAN_ENV, ...env },
  });
  children.add(proc);
  return new Server(name, proc);
}

/* ------------------------------------------------------------------ fake upstream ---------- */

export class Fake extends Server {
  /** Base URL for a deployment, optionally with path directives: base({status: 503}). */
  base(directives = null, suffix = '/v1') {
    if (!directives || Object.keys(directives).length === 0) return `${this.url}${suffix}`;
    const d = Object.entries(directives).map(([k, v]) => `${k}=${v}`).join(',');
    return `${this.url}/_f/${d}${suffix}`;
  }

  async stats() { return (await request(this.url, 'GET', '/_stats')).json(); }
  async last() { return (await request(this.url, 'GET', '/_last')).json(); }
  async reset() {
    const r = await request(this.url, 'POST', '/_reset', { body: '' });
    if (r.status >= 300) throw new Error(`fake /_reset: ${r.status}`);
  }
}

export async function startFake({ threads, env } = {}) {
  const args = ['--listen', '127.0.0.1:0'];
  if (threads) args.push('--threads', String(threads));
  const s = spawnServer('fake_upstream', FAKE_BIN, args, env);
  Object.setPrototypeOf(s, Fake.prototype);
  return s.ready();
}

/* ------------------------------------------------------------------ switchyard ------------- */

/** A deployment entry pointing at the fake. */
export function fakeDeployment(fake, name, { directives = null, model, ...extra } = {}) {
  return {
    name,
    provider: 'openai',
    base_url: fake.base(directives),
    model: model || name,
    price: { input: 0, output: 0 },
    ...extra,
  };
}

/** A complete config object: defaults for everything a test does not care about. */
export function makeConfig({ deployments, aliases, server, upstream, ...rest } = {}) {
  const cfg = {
    listen: '127.0.0.1:0',
    redis: null,
    data_dir: path.join(tmpDir(), `data-${++seq}`),
    deployments: deployments || [],
    ...rest,
  };
  if (aliases) cfg.aliases = aliases;
  if (server) cfg.server = server;
  if (upstream) cfg.upstream = upstream;
  return cfg;
}

export class Proxy extends Server {
  /** An official OpenAI client pointed at the proxy. The client key is never forwarded. */
  client(opts = {}) {
    return new OpenAI({
      baseURL: `${this.url}/v1`,
      apiKey: 'sk-client-key-must-not-leak',
      maxRetries: 0,
      timeout: 30000,
      ...opts,
    });
  }
}

/** Starts switchyard on <config> (an object or a path); cwd defaults to this process's. */
export async function startProxy(config, { env, args = [], cwd } = {}) {
  const cfgPath = typeof config === 'string' ? config : writeConfig(config);
  const s = spawnServer('switchyard', SY_BIN,
    ['serve', '--config', cfgPath, '--listen', '127.0.0.1:0', ...args], env, cwd);
  Object.setPrototypeOf(s, Proxy.prototype);
  s.configPath = cfgPath;
  return s.ready();
}

/** Runs a switchyard subcommand to completion: {code, stdout, stderr}. */
export function runCli(args, { env, timeout = 30000, cwd } = {}) {
  return new Promise((resolve, reject) => {
    const proc = spawn(SY_BIN, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...SAN_ENV, ...env }, cwd });
    children.add(proc);
    let stdout = '';
    let stderr = '';
    proc.stdout.on('data', (d) => { stdout += d; });
    proc.stderr.on('data', (d) => { stderr += d; });
    const t = setTimeout(() => { proc.kill('SIGKILL'); reject(new Error(`switchyard ${args.join(' ')} timed out\n${stderr}`)); }, timeout);
    proc.on('error', (e) => { clearTimeout(t); reject(e); });
    proc.on('exit', (code, signal) => {
      clearTimeout(t);
      children.delete(proc);
      resolve({ code: code ?? 128 + (os.constants.signals[signal] || 0), stdout, stderr });
    });
  });
}

/* ------------------------------------------------------------------ raw HTTP -------------- */

const rawAgent = new http.Agent({ keepAlive: false, maxSockets: Infinity });

/** Raw HTTP request. body: string | Buffer | object (JSON). Resolves with
 *  {status, headers, body: Buffer, text, json()}. */
export function request(base, method, urlPath, { body, headers = {}, timeout = 30000, agent = rawAgent } = {}) {
  const u = new URL(urlPath, base);
  let payload = body;
  const hdrs = { ...headers };
  if (payload !== undefined && payload !== null && !Buffer.isBuffer(payload) && typeof payload !== 'string') {
    payload = JSON.stringify(payload);
    if (!Object.keys(hdrs).some((h) => h.toLowerCase() === 'content-type')) hdrs['content-type'] = 'application/json';
  }
  if (payload !== undefined && payload !== null) hdrs['content-length'] = Buffer.byteLength(payload);
  return new Promise((resolve, reject) => {
    const req = http.request({ host: u.hostname, port: u.port, path: u.pathname + u.search, method, headers: hdrs, agent, timeout }, (res) => {
      const parts = [];
      res.on('data', (d) => parts.push(d));
      res.on('end', () => {
        const buf = Buffer.concat(parts);
        const text = buf.toString('utf8');
        resolve({
          status: res.statusCode,
          headers: res.headers,
          body: buf,
          text,
          json() {
            try { return JSON.parse(text); } catch (e) { throw new Error(`not JSON (status ${res.statusCode}): ${text.slice(0, 500)}`); }
          },
        });
      });
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`${method} ${urlPath}: no answer within ${timeout} ms`)));
    req.on('error', reject);
    if (payload !== undefined && payload !== null) req.write(payload);
    req.end();
  });
}

/** POST a JSON body to the proxy: shorthand. */
export const post = (base, urlPath, body, opts = {}) => request(base, 'POST', urlPath, { ...opts, body });

/** Parses an SSE byte stream into events. Returns {events: [{data, event}], rest}. */
export function parseSSE(text) {
  const events = [];
  const blocks = text.split(/\r?\n\r?\n/);
  const rest = blocks.pop();
  for (const b of blocks) {
    if (!b.trim()) continue;
    const ev = { data: '' };
    const data = [];
    for (const line of b.split(/\r?\n/)) {
      if (line.startsWith(':')) continue;
      const i = line.indexOf(':');
      const field = i < 0 ? line : line.slice(0, i);
      let value = i < 0 ? '' : line.slice(i + 1);
      if (value.startsWith(' ')) value = value.slice(1);
      if (field === 'data') data.push(value);
      else ev[field] = value;
    }
    ev.data = data.join('\n');
    events.push(ev);
  }
  return { events, rest };
}

/** Streams a request over raw HTTP and records when [DONE] arrived and when the response
 *  ended. Resolves {status, headers, text, events, doneAt, endAt, afterDone}. */
export function streamRaw(base, urlPath, body, { headers = {}, timeout = 60000, agent = rawAgent, onEvent } = {}) {
  const u = new URL(urlPath, base);
  const payload = typeof body === 'string' ? body : JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = http.request({
      host: u.hostname, port: u.port, path: u.pathname, method: 'POST', agent, timeout,
      headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload), ...headers },
    }, (res) => {
      let text = '';
      let doneAt = null;
      let seen = 0;
      const events = [];
      res.setEncoding('utf8');
      res.on('data', (d) => {
        text += d;
        const { events: evs } = parseSSE(text);
        for (; seen < evs.length; seen++) {
          events.push(evs[seen]);
          if (evs[seen].data === '[DONE]' && doneAt === null) doneAt = Date.now();
          if (onEvent) onEvent(evs[seen], req, res);
        }
      });
      res.on('end', () => {
        const endAt = Date.now();
        const idx = text.indexOf('data: [DONE]');
        const afterDone = idx < 0 ? null : text.slice(idx + 'data: [DONE]'.length);
        resolve({ status: res.statusCode, headers: res.headers, text, events, doneAt, endAt, afterDone });
      });
      res.on('error', reject);
      res.on('aborted', () => reject(Object.assign(new Error('response aborted'), { text, events })));
    });
    req.on('timeout', () => req.destroy(new Error(`stream ${urlPath}: idle for ${timeout} ms`)));
    req.on('error', reject);
    req.end(payload);
  });
}

/** Asserts the body is an OpenAI-shaped error with <status>; returns the error object. */
export function errorOf(res) {
  let j;
  try { j = JSON.parse(res.text); } catch { throw new Error(`error body is not JSON (status ${res.status}): ${res.text.slice(0, 300)}`); }
  if (!j || typeof j.error !== 'object' || j.error === null) throw new Error(`not an OpenAI error body: ${res.text.slice(0, 300)}`);
  return j.error;
}

/** The JSON lines of file <id> read through the SDK <client> (none for a null id). */
export async function fileLines(client, id) {
  if (!id) return [];
  const text = await (await client.files.content(id)).text();
  return text.split('\n').filter((l) => l.length > 0).map((l) => JSON.parse(l));
}

/** Standard teardown: stop the proxy and return its exit code with stderr on failure. */
export async function stopAll(...servers) {
  const codes = [];
  for (const s of servers) {
    if (!s) continue;
    codes.push({ name: s.name, code: await s.stop(), stderr: s.stderr() });
  }
  return codes;
}

/** A simple chat body. */
export function chatBody(model, text = 'hello', extra = {}) {
  return { model, messages: [{ role: 'user', content: text }], ...extra };
}

/** A function tool with a required and an enum parameter, for tool-call tests. */
export const weatherTool = {
  type: 'function',
  function: {
    name: 'get_weather',
    description: 'Weather for a city',
    parameters: {
      type: 'object',
      properties: { location: { type: 'string' }, unit: { type: 'string', enum: ['c', 'f'] } },
      required: ['location'],
    },
  },
};

/** Stops <server> with SIGTERM and asserts exit code 0 (a leak under ASan makes it non-zero). */
export async function assertCleanExit(server) {
  if (!server) return;
  const code = await server.stop();
  if (code !== 0) {
    throw new Error(`${server.name} exited with code ${code} after SIGTERM (leak or crash?)\n--- stderr (tail) ---\n${server.stderr().slice(-12000)}`);
  }
}

/* ---- redis-server helpers shared by the cache and spend suites ---- */

/** A free loopback TCP port (bound and released). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** Whether a redis-server answers PING on 127.0.0.1:<port> (within 500 ms). */
export function redisPing(port) {
  return new Promise((resolve) => {
    const sock = net.connect({ host: '127.0.0.1', port });
    let buf = '';
    const done = (v) => { sock.destroy(); resolve(v); };
    sock.setTimeout(500, () => done(false));
    sock.on('error', () => done(false));
    sock.on('connect', () => sock.write('PING\r\n'));
    sock.on('data', (d) => { buf += d; if (buf.includes('\r\n')) done(buf.startsWith('+PONG')); });
  });
}

/** Whether a redis-server executable is on PATH (suites that need one skip without it). */
export const haveRedis = (() => {
  for (const d of (process.env.PATH || '').split(':')) {
    try { fs.accessSync(path.join(d, 'redis-server'), fs.constants.X_OK); return true; } catch { /* next */ }
  }
  return false;
})();

/**
 * A throw-away redis-server on a free loopback port (no persistence, its own dir under tmpDir()),
 * resolved once it answers PING. Returns { port, stop() }; stop() sends SIGTERM and waits for the
 * exit. The process is SIGKILLed when node exits, should a suite fail before stop().
 */
export async function startRedis({ dirPrefix = 'redis-' } = {}) {
  const port = await freePort();
  const dir = fs.mkdtempSync(path.join(tmpDir(), dirPrefix));
  const proc = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '',
    '--appendonly', 'no', '--dir', dir], { stdio: 'ignore' });
  const exited = new Promise((r) => proc.on('exit', r));
  process.on('exit', () => { try { proc.kill('SIGKILL'); } catch { /* gone */ } });
  await waitFor(() => redisPing(port), { timeout: 10000, what: 'redis-server to answer PING' });
  return {
    port,
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM');
      await exited;
    },
  };
}

/**
 * A redis-server on a given loopback <port> that a suite can kill (SIGKILL, an outage) and start
 * again on the same port, empty. The dir (no persistence) is made once under tmpDir(); start()
 * resolves once it answers PING, and the process is SIGKILLed when node exits.
 */
export class RedisServer {
  /** <durable>: an append-only file with fsync always, so the data survives the server's own
   *  SIGKILL. */
  constructor(port, { dirPrefix = 'redis-', durable = false } = {}) {
    this.port = port;
    this.dir = fs.mkdtempSync(path.join(tmpDir(), dirPrefix));
    this.durable = durable;
    this.proc = null;
  }

  async start() {
    const aof = this.durable ? ['--appendonly', 'yes', '--appendfsync', 'always'] : ['--appendonly', 'no'];
    const proc = spawn('redis-server', ['--port', String(this.port), '--bind', '127.0.0.1', '--save', '',
      ...aof, '--dir', this.dir], { stdio: 'ignore' });
    this.proc = proc;
    this.exited = new Promise((r) => proc.on('exit', r));
    process.on('exit', () => { try { proc.kill('SIGKILL'); } catch { /* gone */ } });
    await waitFor(() => redisPing(this.port), { timeout: 10000, what: 'redis-server to answer PING' });
  }

  async kill() {
    this.proc.kill('SIGKILL');
    await this.exited;
  }

  /** SIGSTOP: connections stay open, commands are accepted by the kernel and never answered. */
  pause() { this.proc.kill('SIGSTOP'); }

  resume() { this.proc.kill('SIGCONT'); }

  async stop() {
    if (this.proc && this.proc.exitCode === null && this.proc.signalCode === null) {
      this.resume();
      this.proc.kill('SIGTERM');
      await this.exited;
    }
  }
}
