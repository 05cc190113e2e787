#!/usr/bin/env node
// Drives provider.mjs's user flows over plain HTTP: fetch with a manual cookie jar, PKCE
// S256, no browser. Prints one JSON object on stdout; on failure a message on stderr and
// exit 1.
//
//   node flow.mjs login --issuer URL --user NAME [--password PW]
//     {"access_token","id_token","refresh_token","sid","sub","expires_in","scope","cookies"}
//   node flow.mjs logout --issuer URL --cookies JSON [--id-token-hint T]
//     {"ok":true}, or {"ok":true,"session":false} when the cookies named no live session
//   node flow.mjs client-credentials --issuer URL [--client-id svc] [--client-secret svc-secret]
//     {"access_token","expires_in","token_type"}
//
// `--cookies` takes the `cookies` object printed by login, or the whole login JSON.
import * as crypto from 'node:crypto';
import { parseArgs } from 'node:util';

const RESOURCE = 'https://api.tokengate.test';
const REDIRECT_URI = 'http://127.0.0.1/cb';
const WEB = { id: 'web', secret: 'web-secret' };
const MAX_HOPS = 20;

class FlowError extends Error {}

function fail(message) {
  throw new FlowError(message);
}

/** A cookie jar for one origin: name and path matter; domain, expiry dates and flags are ignored. */
class Jar {
  constructor() {
    this.cookies = new Map(); // `${path}\0${name}` -> { name, value, path }
  }

  static fromObject(object) {
    const jar = new Jar();
    for (const [name, value] of Object.entries(object)) jar.cookies.set(`/\0${name}`, { name, value: String(value), path: '/' });
    return jar;
  }

  store(response, requestUrl) {
    for (const line of response.headers.getSetCookie()) {
      const [pair, ...attrs] = line.split(';');
      const eq = pair.indexOf('=');
      if (eq <= 0) continue;
      const name = pair.slice(0, eq).trim();
      const value = pair.slice(eq + 1).trim();
      let path = new URL(requestUrl).pathname.replace(/\/[^/]*$/, '') || '/';
      let expired = value === '';
      for (const attr of attrs) {
        const [k, v = ''] = attr.split('=');
        const key = k.trim().toLowerCase();
        if (key === 'path') path = v.trim() || '/';
        if (key === 'max-age' && Number(v) <= 0) expired = true;
        if (key === 'expires' && Date.parse(v) <= Date.now()) expired = true;
      }
      const id = `${path}\0${name}`;
      if (expired) this.cookies.delete(id);
      else this.cookies.set(id, { name, value, path });
    }
  }

  header(url) {
    const { pathname } = new URL(url);
    const matching = [...this.cookies.values()].filter(({ path }) => pathname === path
      || pathname.startsWith(path.endsWith('/') ? path : `${path}/`));
    matching.sort((a, b) => b.path.length - a.path.length);
    return matching.map(({ name, value }) => `${name}=${value}`).join('; ');
  }

  /** The cookies with path `/`: the provider session (`_session`, `_session.sig`). */
  sessionCookies() {
    const out = {};
    for (const { name, value, path } of this.cookies.values()) if (path === '/') out[name] = value;
    return out;
  }
}

async function request(jar, url, { method = 'GET', form, headers = {} } = {}) {
  const h = new Headers(headers);
  const cookie = jar?.header(url);
  if (cookie) h.set('cookie', cookie);
  let body;
  if (form) {
    body = new URLSearchParams(form).toString();
    h.set('content-type', 'application/x-www-form-urlencoded');
  }
  const response = await fetch(url, { method, headers: h, body, redirect: 'manual' });
  jar?.store(response, url);
  return response;
}

function basic(id, secret) {
  return `Basic ${Buffer.from(`${encodeURIComponent(id)}:${encodeURIComponent(secret)}`).toString('base64')}`;
}

async function json(response, what) {
  const text = await response.text();
  let body;
  try {
    body = JSON.parse(text);
  } catch {
    fail(`${what}: HTTP ${response.status}, not JSON: ${text.slice(0, 300)}`);
  }
  if (!response.ok) fail(`${what}: HTTP ${response.status}: ${text.slice(0, 300)}`);
  return body;
}

async function discover(issuer) {
  const config = await json(await fetch(`${issuer}/.well-known/openid-configuration`), 'discovery');
  if (config.issuer !== issuer) fail(`discovery: issuer ${config.issuer}, expected ${issuer}`);
  return config;
}

function payloadOf(jwt) {
  const parts = String(jwt).split('.');
  if (parts.length !== 3) fail(`not a JWS compact token: ${String(jwt).slice(0, 40)}...`);
  return JSON.parse(Buffer.from(parts[1], 'base64url').toString('utf8'));
}

function formOf(html, what) {
  const form = /<form\b[^>]*>/i.exec(html);
  if (!form) fail(`${what}: no form in the page: ${html.slice(0, 300)}`);
  const action = /\baction="([^"]*)"/i.exec(form[0])?.[1];
  if (!action) fail(`${what}: the form has no action`);
  const fields = {};
  for (const input of html.matchAll(/<input\b[^>]*>/gi)) {
    const name = /\bname="([^"]*)"/i.exec(input[0])?.[1];
    const value = /\bvalue="([^"]*)"/i.exec(input[0])?.[1] ?? '';
    if (name) fields[name] = value.replace(/&#(\d+);/g, (_, n) => String.fromCharCode(Number(n))).replace(/&amp;/g, '&');
  }
  return { action: action.replace(/&amp;/g, '&'), fields };
}

async function login({ issuer, user, password }) {
  const config = await discover(issuer);
  const jar = new Jar();
  const verifier = crypto.randomBytes(32).toString('base64url');
  const challenge = crypto.createHash('sha256').update(verifier).digest('base64url');
  const state = crypto.randomBytes(16).toString('base64url');
  const nonce = crypto.randomBytes(16).toString('base64url');

  const auth = new URL(config.authorization_endpoint);
  auth.search = new URLSearchParams({
    client_id: WEB.id,
    response_type: 'code',
    redirect_uri: REDIRECT_URI,
    // No offline_access: the refresh token is bound to the provider session (provider.mjs).
    scope: 'openid email api:read api:write',
    resource: RESOURCE,
    code_challenge: challenge,
    code_challenge_method: 'S256',
    state,
    nonce,
  }).toString();

  // Follow the redirects, answering the login page once, until the client's redirect_uri.
  let url = auth.href;
  let next = { method: 'GET' };
  let code;
  let loggedIn = false;
  for (let hop = 0; hop < MAX_HOPS && code === undefined; hop += 1) {
    const response = await request(jar, url, next);
    next = { method: 'GET' };
    if (response.status >= 300 && response.status < 400) {
      const location = response.headers.get('location');
      if (!location) fail(`authorization: HTTP ${response.status} without Location at ${url}`);
      await response.arrayBuffer();
      const target = new URL(location, url);
      if (target.href.startsWith(`${REDIRECT_URI}?`) || target.href === REDIRECT_URI) {
        const params = target.searchParams;
        if (params.get('error')) fail(`authorization: ${params.get('error')}: ${params.get('error_description')}`);
        if (params.get('state') !== state) fail('authorization: state mismatch');
        if (params.has('iss') && params.get('iss') !== issuer) fail(`authorization: iss ${params.get('iss')}`);
        code = params.get('code');
        if (!code) fail(`authorization: no code in ${target.href}`);
      } else {
        url = target.href;
      }
      continue;
    }
    const text = await response.text();
    if (response.status !== 200) fail(`authorization: HTTP ${response.status} at ${url}: ${text.slice(0, 300)}`);
    if (loggedIn) fail(`authorization: a second page after the login at ${url}: ${text.slice(0, 300)}`);
    const { action, fields } = formOf(text, 'login page');
    if (!('login' in fields)) fail(`login page: no login field at ${url}`);
    fields.login = user;
    fields.password = password;
    url = new URL(action, url).href;
    next = { method: 'POST', form: fields };
    loggedIn = true;
  }
  if (code === undefined) fail(`authorization: no code after ${MAX_HOPS} redirects`);

  const tokens = await json(await request(null, config.token_endpoint, {
    method: 'POST',
    headers: { authorization: basic(WEB.id, WEB.secret) },
    form: {
      grant_type: 'authorization_code',
      code,
      redirect_uri: REDIRECT_URI,
      code_verifier: verifier,
      resource: RESOURCE,
    },
  }), 'token endpoint');
  const idToken = payloadOf(tokens.id_token);
  if (idToken.nonce !== nonce) fail('id_token: nonce mismatch');
  const at = payloadOf(tokens.access_token);
  if (at.sid !== idToken.sid) fail(`access token sid ${at.sid} differs from the id_token's ${idToken.sid}`);
  return {
    access_token: tokens.access_token,
    id_token: tokens.id_token,
    refresh_token: tokens.refresh_token,
    sid: idToken.sid,
    sub: idToken.sub,
    expires_in: tokens.expires_in,
    scope: tokens.scope,
    cookies: jar.sessionCookies(),
  };
}

async function logout({ issuer, cookies, idTokenHint }) {
  const config = await discover(issuer);
  if (!config.end_session_endpoint) fail('discovery: no end_session_endpoint');
  const jar = Jar.fromObject(cookies);
  const end = new URL(config.end_session_endpoint);
  if (idTokenHint) end.searchParams.set('id_token_hint', idTokenHint);
  else end.searchParams.set('client_id', WEB.id);

  let response = await request(jar, end.href);
  let text = await response.text();
  if (response.status !== 200) fail(`end_session: HTTP ${response.status}: ${text.slice(0, 300)}`);
  // With a live session the provider shows its confirmation page (a "Yes, sign me out"
  // button); without one, an auto-submitting form and no back-channel logout is sent.
  const session = /<button[^>]*name="logout"/.test(text);
  const { action, fields } = formOf(text, 'end_session');
  if (!fields.xsrf) fail('end_session: the logout form has no xsrf field');
  // "Yes, sign me out": logout=yes ends the whole provider session, for every client,
  // and the provider answers only once each back-channel logout request has returned.
  const confirm = new URL(action, end).href;
  response = await request(jar, confirm, { method: 'POST', form: { ...fields, logout: 'yes' } });
  text = await response.text();
  if (response.status !== 303) fail(`end_session confirm: HTTP ${response.status}: ${text.slice(0, 300)}`);
  const location = new URL(response.headers.get('location'), confirm).href;
  if (location.startsWith(issuer)) {
    response = await request(jar, location);
    text = await response.text();
    if (response.status !== 200) fail(`end_session success page: HTTP ${response.status}: ${text.slice(0, 300)}`);
  }
  return session ? { ok: true } : { ok: true, session: false };
}

async function clientCredentials({ issuer, clientId, clientSecret }) {
  const config = await discover(issuer);
  const tokens = await json(await request(null, config.token_endpoint, {
    method: 'POST',
    headers: { authorization: basic(clientId, clientSecret) },
    form: { grant_type: 'client_credentials', resource: RESOURCE },
  }), 'token endpoint');
  return { access_token: tokens.access_token, expires_in: tokens.expires_in, token_type: tokens.token_type };
}

function parseCookies(raw) {
  let value;
  try {
    value = JSON.parse(raw);
  } catch {
    fail('--cookies is not JSON');
  }
  if (value && typeof value.cookies === 'object') value = value.cookies;
  if (!value || typeof value !== 'object' || Array.isArray(value)) fail('--cookies must be a JSON object of cookie names to values');
  return value;
}

async function main(argv) {
  const [command, ...rest] = argv;
  let values;
  try {
    ({ values } = parseArgs({
      args: rest,
      options: {
        issuer: { type: 'string' },
        user: { type: 'string' },
        password: { type: 'string', default: 'any password' },
        cookies: { type: 'string' },
        'id-token-hint': { type: 'string' },
        'client-id': { type: 'string', default: 'svc' },
        'client-secret': { type: 'string', default: 'svc-secret' },
      },
    }));
  } catch (err) {
    fail(err.message);
  }
  if (!values.issuer) fail('--issuer URL is required');
  const issuer = values.issuer.replace(/\/$/, '');
  switch (command) {
    case 'login':
      if (!values.user) fail('login needs --user NAME');
      return login({ issuer, user: values.user, password: values.password });
    case 'logout':
      if (!values.cookies) fail('logout needs --cookies JSON (the cookies printed by login)');
      return logout({ issuer, cookies: parseCookies(values.cookies), idTokenHint: values['id-token-hint'] });
    case 'client-credentials':
      return clientCredentials({ issuer, clientId: values['client-id'], clientSecret: values['client-secret'] });
    default:
      fail('usage: flow.mjs login|logout|client-credentials --issuer URL ...');
  }
  return undefined;
}

try {
  process.stdout.write(`${JSON.stringify(await main(process.argv.slice(2)))}\n`);
} catch (err) {
  process.stderr.write(`flow.mjs: ${err instanceof FlowError ? err.message : err.stack}\n`);
  process.exit(1);
}
