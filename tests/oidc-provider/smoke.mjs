#!/usr/bin/env node
// Smoke test of provider.mjs and flow.mjs: `node smoke.mjs` (no arguments). Starts the
// provider on a free loopback port with a back-channel logout receiver of its own, checks
// discovery, JWKS, client-credentials and user tokens, RP-initiated logout with its
// back-channel logout token, and key rotation across a restart on the same port.
// Exit 0 on success; otherwise exit 1 with `FAIL ...` on stderr. The provider is always
// stopped. Every signature is verified against the served JWKS with node:crypto.
import { execFile, spawn } from 'node:child_process';
import * as crypto from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import * as http from 'node:http';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const here = dirname(fileURLToPath(import.meta.url));
const PROVIDER = join(here, 'provider.mjs');
const FLOW = join(here, 'flow.mjs');
const RESOURCE = 'https://api.tokengate.test';
const BCL_EVENT = 'http://schemas.openid.net/event/backchannel-logout';
const DEADLINE_MS = 30_000;

const execFileAsync = promisify(execFile);
const children = new Set(); // every child process still running, killed on any exit

/** execFile of node with `args`; the child is killed with the smoke test if still running. */
function run(args, timeout) {
  const promise = execFileAsync(process.execPath, args, { timeout });
  children.add(promise.child);
  promise.child.on('exit', () => children.delete(promise.child));
  return promise;
}
const started = Date.now();
const work = mkdtempSync(join(tmpdir(), 'oidc-smoke-'));
let step = 'start';

class Failure extends Error {}
function check(condition, message) {
  if (!condition) throw new Failure(message);
}
function ok(message) {
  process.stdout.write(`ok   ${message} [${((Date.now() - started) / 1000).toFixed(1)} s]\n`);
}

// ---- JOSE helpers (node:crypto only) -------------------------------------------------

function decode(jwt) {
  const parts = String(jwt).split('.');
  check(parts.length === 3, `not a compact JWS: ${String(jwt).slice(0, 40)}`);
  return {
    header: JSON.parse(Buffer.from(parts[0], 'base64url')),
    payload: JSON.parse(Buffer.from(parts[1], 'base64url')),
    input: Buffer.from(`${parts[0]}.${parts[1]}`),
    signature: Buffer.from(parts[2], 'base64url'),
  };
}

/** The decoded token once its signature verifies with the key of its `kid` in `jwks`. */
function verify(jwt, jwks, what) {
  const token = decode(jwt);
  const { alg, kid } = token.header;
  check(kid, `${what}: no kid in the header`);
  const jwk = jwks.keys.find((k) => k.kid === kid);
  check(jwk, `${what}: kid ${kid} is not in the JWKS (${jwks.keys.map((k) => k.kid).join(', ')})`);
  check(!jwk.alg || jwk.alg === alg, `${what}: alg ${alg} but the JWKS key says ${jwk.alg}`);
  const key = crypto.createPublicKey({ key: jwk, format: 'jwk' });
  let valid;
  switch (alg) {
    case 'RS256':
      valid = crypto.verify('sha256', token.input, key, token.signature);
      break;
    case 'PS256':
      valid = crypto.verify('sha256', token.input, {
        key, padding: crypto.constants.RSA_PKCS1_PSS_PADDING, saltLength: 32,
      }, token.signature);
      break;
    case 'ES256':
      valid = crypto.verify('sha256', token.input, { key, dsaEncoding: 'ieee-p1363' }, token.signature);
      break;
    case 'EdDSA':
    case 'Ed25519':
      valid = crypto.verify(null, token.input, key, token.signature);
      break;
    default:
      check(false, `${what}: unexpected alg ${alg}`);
  }
  check(valid, `${what}: the signature does not verify with key ${kid}`);
  return token;
}

// ---- processes -----------------------------------------------------------------------

async function genkey(alg, kid) {
  const t0 = Date.now();
  let stdout;
  try {
    ({ stdout } = await run([PROVIDER, 'genkey', '--alg', alg, '--kid', kid], 15_000));
  } catch (err) {
    throw new Failure(`genkey ${alg} failed after ${Date.now() - t0} ms (${err.signal ?? err.code}): ${err.stderr || err.message}`);
  }
  const jwks = JSON.parse(stdout);
  check(jwks.keys?.length === 1 && jwks.keys[0].kid === kid && jwks.keys[0].d, `genkey ${alg}: unexpected output`);
  return jwks;
}

function writeKeys(name, ...sets) {
  const file = join(work, name);
  writeFileSync(file, JSON.stringify({ keys: sets.flatMap((s) => s.keys) }));
  return file;
}

function startProvider(args) {
  const child = spawn(process.execPath, [PROVIDER, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  let stdout = '';
  let stderr = '';
  child.stderr.on('data', (chunk) => { stderr += chunk; });
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => {
    children.delete(child);
    resolve({ code, signal });
  }));
  const ready = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Failure(`provider not ready after 10 s; stderr:\n${stderr}`)), 10_000);
    child.stdout.on('data', (chunk) => {
      stdout += chunk;
      const m = /^ready (http:\/\/127\.0\.0\.1:(\d+))\n/.exec(stdout);
      if (m) {
        clearTimeout(timer);
        resolve({ issuer: m[1], port: Number(m[2]) });
      }
    });
    exited.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new Failure(`provider exited (${code ?? signal}) before ready; stderr:\n${stderr}`));
    });
  });
  return {
    child,
    ready,
    stderr: () => stderr,
    stdout: () => stdout,
    async stop() {
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 3000);
      const result = await exited;
      clearTimeout(timer);
      return result;
    },
  };
}

async function flow(...args) {
  const t0 = Date.now();
  try {
    const { stdout } = await run([FLOW, ...args], 15_000);
    return JSON.parse(stdout);
  } catch (err) {
    throw new Failure(`flow.mjs ${args[0]} failed after ${Date.now() - t0} ms (${err.signal ?? err.code}): ${err.stderr || err.message}`);
  }
}

/** A back-channel logout receiver: records every request, answers 200. */
async function listener() {
  const received = [];
  const waiters = [];
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      received.push({
        method: req.method,
        url: req.url,
        contentType: req.headers['content-type'],
        body: Buffer.concat(chunks).toString('utf8'),
      });
      res.writeHead(200, { 'cache-control': 'no-store' }).end();
      while (waiters.length) waiters.shift()();
    });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}/backchannel-logout`,
    received,
    close: () => new Promise((resolve) => {
      server.close(resolve);
      server.closeAllConnections();
    }),
  };
}

async function getJson(url) {
  const response = await fetch(url);
  check(response.ok, `GET ${url}: HTTP ${response.status}`);
  return response.json();
}

/** POST grant_type=refresh_token for client web; the HTTP status and the JSON answer. */
async function refresh(config, refreshToken) {
  const response = await fetch(config.token_endpoint, {
    method: 'POST',
    headers: {
      authorization: `Basic ${Buffer.from('web:web-secret').toString('base64')}`,
      'content-type': 'application/x-www-form-urlencoded',
    },
    body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: refreshToken }),
  });
  return { status: response.status, body: await response.json() };
}

// ---- the checks ----------------------------------------------------------------------

function checkAccessToken(token, jwks, issuer, expect) {
  const { header, payload } = verify(token, jwks, `${expect.what} access token`);
  check(header.typ === 'at+jwt', `${expect.what}: typ ${header.typ}, expected at+jwt`);
  check(payload.iss === issuer, `${expect.what}: iss ${payload.iss}`);
  check(payload.aud === RESOURCE, `${expect.what}: aud ${JSON.stringify(payload.aud)}, expected ${RESOURCE}`);
  check(payload.client_id === expect.clientId, `${expect.what}: client_id ${payload.client_id}`);
  check(payload.sub === expect.sub, `${expect.what}: sub ${payload.sub}, expected ${expect.sub}`);
  for (const claim of ['jti', 'scope']) check(typeof payload[claim] === 'string' && payload[claim], `${expect.what}: no ${claim}`);
  check(Number.isInteger(payload.iat) && Number.isInteger(payload.exp) && payload.exp > payload.iat, `${expect.what}: bad iat/exp`);
  check(Math.abs(payload.iat - Date.now() / 1000) < 60, `${expect.what}: iat ${payload.iat} is not now`);
  return { header, payload };
}

async function main() {
  const receiver = await listener();
  try {
    step = 'keys';
    // Independent steps run side by side: the machine may be busy with other builds.
    const newKeysLater = genkey('ES256', 'smoke-new');
    newKeysLater.catch(() => {});
    const oldKeys = await genkey('RS256', 'smoke-old');

    step = 'start';
    let provider = startProvider(['--port', '0', '--keys', writeKeys('old.json', oldKeys),
      '--backchannel-uri', receiver.url, '--access-token-ttl', '300']);
    const { issuer, port } = await provider.ready;
    ok(`provider ready at ${issuer}`);

    step = 'discovery';
    const config = await getJson(`${issuer}/.well-known/openid-configuration`);
    check(config.issuer === issuer, `discovery issuer ${config.issuer}, expected ${issuer}`);
    for (const field of ['jwks_uri', 'token_endpoint', 'authorization_endpoint', 'end_session_endpoint']) {
      check(config[field]?.startsWith(`${issuer}/`), `discovery: ${field} ${config[field]}`);
    }
    check(config.backchannel_logout_supported === true && config.backchannel_logout_session_supported === true,
      'discovery: back-channel logout not advertised');
    let jwks = await getJson(config.jwks_uri);
    check(jwks.keys.length === 1 && jwks.keys[0].kid === 'smoke-old', `JWKS kids ${jwks.keys.map((k) => k.kid)}`);
    check(jwks.keys.every((k) => !('d' in k) && !('p' in k)), 'JWKS publishes private key members');
    ok(`discovery and JWKS served (kid smoke-old, jwks_uri ${config.jwks_uri})`);

    step = 'client credentials';
    {
      // The same request as `curl -d grant_type=client_credentials -d resource=... -u svc:svc-secret`.
      const response = await fetch(config.token_endpoint, {
        method: 'POST',
        headers: {
          authorization: `Basic ${Buffer.from('svc:svc-secret').toString('base64')}`,
          'content-type': 'application/x-www-form-urlencoded',
        },
        body: new URLSearchParams({ grant_type: 'client_credentials', resource: RESOURCE }),
      });
      check(response.ok, `client_credentials: HTTP ${response.status}: ${await response.clone().text()}`);
      const { access_token: raw } = await response.json();
      const { header, payload } = checkAccessToken(raw, jwks, issuer, { what: 'client_credentials', clientId: 'svc', sub: 'svc' });
      check(header.alg === 'RS256' && header.kid === 'smoke-old', `client_credentials header ${JSON.stringify(header)}`);
      check(payload.scope === 'api:read api:write', `client_credentials scope ${payload.scope}`);
      check(payload.exp - payload.iat === 300, `client_credentials lifetime ${payload.exp - payload.iat}, expected 300`);
      ok(`client_credentials token: RS256 kid ${header.kid}, aud ${payload.aud}, scope "${payload.scope}"`);
    }

    step = 'login';
    const [viaFlow, first, second] = await Promise.all([
      flow('client-credentials', '--issuer', issuer),
      flow('login', '--issuer', issuer, '--user', 'alice'),
      flow('login', '--issuer', issuer, '--user', 'alice'),
    ]);
    checkAccessToken(viaFlow.access_token, jwks, issuer, { what: 'flow client-credentials', clientId: 'svc', sub: 'svc' });
    const users = [];
    for (const [what, login] of [['first login', first], ['second login', second]]) {
      for (const field of ['access_token', 'id_token', 'refresh_token', 'sid']) check(login[field], `${what}: no ${field}`);
      check(login.cookies?._session, `${what}: no _session cookie in ${JSON.stringify(login.cookies)}`);
      const { payload } = checkAccessToken(login.access_token, jwks, issuer, { what, clientId: 'web', sub: 'alice' });
      check(payload.sid === login.sid, `${what}: access token sid ${payload.sid}, login sid ${login.sid}`);
      check(payload.email === 'alice@example.test', `${what}: access token email ${payload.email}`);
      const id = verify(login.id_token, jwks, `${what} id_token`).payload;
      check(id.iss === issuer && id.aud === 'web' && id.sub === 'alice' && id.sid === login.sid, `${what}: id_token ${JSON.stringify(id)}`);
      users.push(payload);
    }
    check(first.sid !== second.sid, `two logins share the sid ${first.sid}`);
    check(users[0].jti !== users[1].jti, 'two logins share the access token jti');
    ok(`two logins of alice: sids ${first.sid.slice(0, 8)}... and ${second.sid.slice(0, 8)}...; access tokens carry sub, sid, jti, aud, email`);

    step = 'refresh';
    {
      const { status, body } = await refresh(config, first.refresh_token);
      check(status === 200, `refresh of the first login: HTTP ${status}: ${JSON.stringify(body)}`);
      const { payload } = checkAccessToken(body.access_token, jwks, issuer, { what: 'refreshed', clientId: 'web', sub: 'alice' });
      check(payload.sid === first.sid && payload.jti !== users[0].jti, `refreshed token sid ${payload.sid}, jti ${payload.jti}`);
      first.refresh_token = body.refresh_token ?? first.refresh_token;
    }
    ok('refresh: a new access token (new jti) with the same sid');

    step = 'logout';
    check(receiver.received.length === 0, `back-channel calls before any logout: ${receiver.received.length}`);
    const out = await flow('logout', '--issuer', issuer, '--cookies', JSON.stringify(first));
    check(out.ok === true && out.session !== false, `logout printed ${JSON.stringify(out)}`);
    check(receiver.received.length === 1, `expected 1 back-channel logout request, got ${receiver.received.length}`);
    {
      const [call] = receiver.received;
      check(call.method === 'POST', `back-channel logout method ${call.method}`);
      check(call.contentType?.split(';')[0].trim() === 'application/x-www-form-urlencoded', `back-channel content-type ${call.contentType}`);
      const form = new URLSearchParams(call.body);
      check([...form.keys()].join() === 'logout_token', `back-channel form fields ${[...form.keys()]}`);
      const { header, payload } = verify(form.get('logout_token'), jwks, 'logout token');
      check(header.typ === 'logout+jwt', `logout token typ ${header.typ}`);
      check(payload.iss === issuer, `logout token iss ${payload.iss}`);
      check(payload.aud === 'web', `logout token aud ${JSON.stringify(payload.aud)}`);
      check(Number.isInteger(payload.iat) && Number.isInteger(payload.exp) && payload.exp > payload.iat, 'logout token iat/exp');
      check(typeof payload.jti === 'string' && payload.jti, 'logout token jti');
      check(JSON.stringify(payload.events) === JSON.stringify({ [BCL_EVENT]: {} }), `logout token events ${JSON.stringify(payload.events)}`);
      check(payload.sid === first.sid, `logout token sid ${payload.sid}, expected the first login's ${first.sid}`);
      check(payload.sub === 'alice', `logout token sub ${payload.sub}`);
      check(!('nonce' in payload), 'logout token has a nonce');
    }
    ok('logout of the first session: one back-channel POST, logout_token with iss, aud=web, iat, exp, jti, events, sid, sub');

    {
      const [dead, alive, again] = await Promise.all([
        refresh(config, first.refresh_token),
        refresh(config, second.refresh_token),
        flow('logout', '--issuer', issuer, '--cookies', JSON.stringify(first.cookies)),
      ]);
      check(dead.status === 400 && dead.body.error === 'invalid_grant', `refresh after logout: HTTP ${dead.status}: ${JSON.stringify(dead.body)}`);
      check(alive.status === 200, `refresh of the other session after the first logout: HTTP ${alive.status}: ${JSON.stringify(alive.body)}`);
      check(decode(alive.body.access_token).payload.sid === second.sid, 'refresh of the other session: another sid');
      check(again.session === false && receiver.received.length === 1, `a second logout of the first session: ${JSON.stringify(again)}, ${receiver.received.length} calls`);
    }
    ok('after the logout the first session\'s refresh token is refused and its cookies name no session; the second session\'s refresh token still works');

    const secondOut = await flow('logout', '--issuer', issuer, '--cookies', JSON.stringify(second.cookies), '--id-token-hint', second.id_token);
    check(secondOut.ok === true && secondOut.session !== false, `logout of the second session: ${JSON.stringify(secondOut)}`);
    check(receiver.received.length === 2, `expected a second back-channel request, got ${receiver.received.length}`);
    const secondSid = decode(new URLSearchParams(receiver.received[1].body).get('logout_token')).payload.sid;
    check(secondSid === second.sid, `second logout token sid ${secondSid}, expected ${second.sid}`);
    ok('the second session outlived the first logout; its own logout (id_token_hint) sent its sid');

    step = 'rotation';
    const newKeys = await newKeysLater;
    let stopped = await provider.stop();
    check(stopped.code === 0, `provider exit on SIGTERM: ${JSON.stringify(stopped)}; stderr:\n${provider.stderr()}`);
    provider = startProvider(['--port', String(port), '--keys', writeKeys('both.json', newKeys, oldKeys),
      '--backchannel-uri', receiver.url]);
    check((await provider.ready).issuer === issuer, 'restarted provider has another issuer');
    jwks = await getJson(config.jwks_uri);
    check(jwks.keys.map((k) => k.kid).join() === 'smoke-new,smoke-old', `JWKS after rotation: ${jwks.keys.map((k) => k.kid)}`);
    {
      const [{ access_token: raw }, login] = await Promise.all([
        flow('client-credentials', '--issuer', issuer),
        flow('login', '--issuer', issuer, '--user', 'bob@example.org'),
      ]);
      const { header } = checkAccessToken(raw, jwks, issuer, { what: 'rotated client_credentials', clientId: 'svc', sub: 'svc' });
      check(header.kid === 'smoke-new' && header.alg === 'ES256', `rotated token header ${JSON.stringify(header)}`);
      const at = checkAccessToken(login.access_token, jwks, issuer, { what: 'rotated login', clientId: 'web', sub: 'bob@example.org' });
      check(at.header.kid === 'smoke-new' && at.payload.email === 'bob@example.org', `rotated login token ${JSON.stringify(at)}`);
      check(decode(login.id_token).header.kid === 'smoke-new', 'rotated id_token kid');
    }
    ok('restart with a new ES256 key first and the old after: both published, new tokens carry kid smoke-new');

    stopped = await provider.stop();
    check(stopped.code === 0, `provider exit on SIGTERM: ${JSON.stringify(stopped)}`);
    provider = startProvider(['--port', String(port), '--keys', writeKeys('new.json', newKeys)]);
    await provider.ready;
    jwks = await getJson(config.jwks_uri);
    check(jwks.keys.map((k) => k.kid).join() === 'smoke-new', `JWKS with the new key only: ${jwks.keys.map((k) => k.kid)}`);
    {
      // No --backchannel-uri this time: user tokens still carry the sid.
      const login = await flow('login', '--issuer', issuer, '--user', 'carol');
      const at = checkAccessToken(login.access_token, jwks, issuer, { what: 'login without back-channel', clientId: 'web', sub: 'carol' });
      check(login.sid && at.payload.sid === login.sid, `login without --backchannel-uri: sid ${login.sid}, access token sid ${at.payload.sid}`);
    }
    stopped = await provider.stop();
    check(stopped.code === 0, `provider exit on SIGTERM: ${JSON.stringify(stopped)}`);
    ok('restart with the new key only (and no --backchannel-uri): the old kid is gone; user tokens keep their sid');
    check(provider.stdout() === `ready ${issuer}\n`, `provider stdout is more than the ready line: ${JSON.stringify(provider.stdout())}`);
  } finally {
    await receiver.close();
  }
}

const deadline = setTimeout(() => {
  process.stderr.write(`FAIL smoke did not finish within ${DEADLINE_MS / 1000} s (at step ${step})\n`);
  for (const child of children) child.kill('SIGKILL');
  process.exit(1);
}, DEADLINE_MS);
process.on('exit', () => {
  for (const child of children) child.kill('SIGKILL');
  rmSync(work, { recursive: true, force: true });
});

try {
  await main();
  clearTimeout(deadline);
  process.stdout.write(`oidc-provider smoke: all checks passed in ${((Date.now() - started) / 1000).toFixed(1)} s\n`);
} catch (err) {
  clearTimeout(deadline);
  for (const child of children) child.kill('SIGKILL');
  process.stderr.write(`FAIL at step ${step}: ${err instanceof Failure ? err.message : err.stack}\n`);
  process.exitCode = 1;
}
