#!/usr/bin/env node
// A real OpenID provider (panva's oidc-provider) for tokengate's integration tests.
//
//   node provider.mjs --port P [--keys FILE] [--backchannel-uri URL] [--access-token-ttl SECS]
//   node provider.mjs genkey [--alg RS256|ES256|PS256|EdDSA] [--kid K]
//
// Serves on 127.0.0.1:P with issuer exactly http://127.0.0.1:P (P = 0 picks a free port;
// the issuer then names the port actually bound). Prints `ready http://127.0.0.1:P` on
// stdout once listening, and nothing else on stdout; oidc-provider's notices go to stderr.
// Exits 0 on SIGTERM or SIGINT. See README.md for the clients, claims and flows.
import * as crypto from 'node:crypto';
import { readFileSync } from 'node:fs';
import * as http from 'node:http';
import { parseArgs } from 'node:util';

// oidc-provider prints its notices with console.info (stdout); stdout is for the ready line.
console.info = (...args) => console.error(...args);
console.log = (...args) => console.error(...args);

const RESOURCE = 'https://api.tokengate.test';
const RESOURCE_SCOPE = 'api:read api:write';
const ALGS = ['RS256', 'PS256', 'ES256', 'EdDSA'];

function fail(message) {
  process.stderr.write(`provider.mjs: ${message}\n`);
  process.exit(2);
}

/** A private JWK set with one fresh signing key of `alg`. */
function generateJwks(alg = 'RS256', kid = undefined) {
  // The key comes out of the generator as PKCS#8 PEM and is parsed again before the JWK
  // export: Node 20 can deadlock when the garbage collector frees the key generation job
  // while the very key it made is being exported as a JWK (seen here with
  // generateKeyPairSync + KeyObject#export({ format: 'jwk' }); a fresh KeyObject avoids it).
  const encoding = {
    publicKeyEncoding: { type: 'spki', format: 'pem' },
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
  };
  let pair;
  switch (alg) {
    case 'RS256':
    case 'PS256':
      pair = crypto.generateKeyPairSync('rsa', { modulusLength: 2048, ...encoding });
      break;
    case 'ES256':
      pair = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256', ...encoding });
      break;
    case 'EdDSA':
      pair = crypto.generateKeyPairSync('ed25519', encoding);
      break;
    default:
      throw new Error(`unsupported --alg ${alg} (one of ${ALGS.join(', ')})`);
  }
  const jwk = crypto.createPrivateKey(pair.privateKey).export({ format: 'jwk' });
  return {
    keys: [{
      ...jwk,
      kid: kid ?? `${alg.toLowerCase()}-${crypto.randomBytes(6).toString('hex')}`,
      alg,
      use: 'sig',
    }],
  };
}

function algOf(jwk) {
  if (jwk.alg) return jwk.alg;
  if (jwk.kty === 'RSA') return 'RS256';
  if (jwk.kty === 'EC' && jwk.crv === 'P-256') return 'ES256';
  if (jwk.kty === 'OKP' && jwk.crv === 'Ed25519') return 'EdDSA';
  return undefined;
}

function loadKeys(file) {
  let jwks;
  try {
    jwks = JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    fail(`cannot read --keys ${file}: ${err.message}`);
  }
  if (!Array.isArray(jwks?.keys) || jwks.keys.length === 0) {
    fail(`--keys ${file} is not a JWK set with at least one key`);
  }
  for (const [i, jwk] of jwks.keys.entries()) {
    if (!jwk.d) fail(`--keys ${file}: key ${i} is not a private key (no "d")`);
    if (!jwk.kid) fail(`--keys ${file}: key ${i} has no "kid"`);
    if (!ALGS.includes(algOf(jwk))) fail(`--keys ${file}: key ${i} (${jwk.kid}) has no supported alg`);
  }
  return jwks;
}

/** The account of any login name: sub = the name; email = the name if it has an @, else name@example.test. */
function emailFor(accountId) {
  return accountId.includes('@') ? accountId : `${accountId}@example.test`;
}

function findAccount(_ctx, accountId) {
  return {
    accountId,
    async claims() {
      return { sub: accountId, email: emailFor(accountId), email_verified: true };
    },
  };
}

function html(title, body) {
  return `<!DOCTYPE html><html><head><meta charset="utf-8"><title>${title}</title></head><body>${body}</body></html>`;
}

function escapeHtml(value) {
  return String(value).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

async function readForm(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > 64 * 1024) throw new Error('form too large');
    chunks.push(chunk);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

function configuration({ errors, jwks, alg, backchannelUri, accessTokenTtl }) {
  const web = {
    client_id: 'web',
    client_secret: 'web-secret',
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    redirect_uris: ['http://127.0.0.1/cb'],
    post_logout_redirect_uris: ['http://127.0.0.1/logged-out'],
    token_endpoint_auth_method: 'client_secret_basic',
    id_token_signed_response_alg: alg,
    backchannel_logout_session_required: true,
  };
  if (backchannelUri) web.backchannel_logout_uri = backchannelUri;

  return {
    clients: [
      {
        client_id: 'svc',
        client_secret: 'svc-secret',
        grant_types: ['client_credentials'],
        response_types: [],
        redirect_uris: [],
        token_endpoint_auth_method: 'client_secret_basic',
        id_token_signed_response_alg: alg,
      },
      web,
    ],
    jwks,
    // Signed cookies; a new secret each start (sessions live in memory anyway).
    cookies: { keys: [crypto.randomBytes(32).toString('base64url')] },
    scopes: ['openid', 'offline_access', 'email'],
    // Refresh tokens for every code grant of a client allowed refresh_token, without
    // offline_access: they expire with the provider session and die at its logout, as most
    // identity providers' session-bound refresh tokens do. (offline_access would make the
    // grant outlive the logout.)
    issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
    claims: { openid: ['sub'], email: ['email', 'email_verified'] },
    findAccount,
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      introspection: { enabled: true },
      revocation: { enabled: true },
      backchannelLogout: { enabled: true },
      rpInitiatedLogout: {
        enabled: true,
        async logoutSource(ctx, form) {
          ctx.body = html('Sign out', `${form}<p>Sign out from ${escapeHtml(ctx.host)}?</p>`
            + '<button type="submit" form="op.logoutForm" name="logout" value="yes">Yes, sign me out</button>'
            + '<button type="submit" form="op.logoutForm">No</button>');
        },
        async postLogoutSuccessSource(ctx) {
          ctx.body = html('Signed out', '<p id="signed-out">Signed out.</p>');
        },
      },
      resourceIndicators: {
        enabled: true,
        // Every access token is a JWT for the API, also when no resource was asked for.
        defaultResource: async (_ctx, _client, oneOf) => oneOf ?? RESOURCE,
        useGrantedResource: async () => true,
        async getResourceServerInfo(_ctx, resourceIndicator) {
          if (resourceIndicator !== RESOURCE) throw new errors.InvalidTarget();
          return {
            scope: RESOURCE_SCOPE,
            audience: RESOURCE,
            accessTokenTTL: accessTokenTtl,
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg } },
          };
        },
      },
    },
    // sid (the OIDC session id this client sees, the same as in the ID token and in the
    // back-channel logout token) and email go into user access tokens.
    async extraTokenClaims(_ctx, token) {
      if (!token.accountId) return undefined;
      return { email: emailFor(token.accountId), ...(token.sid ? { sid: token.sid } : {}) };
    },
    formats: {
      customizers: {
        // A client_credentials request without `scope` gets a token without scope; give it
        // the resource's whole scope so every token carries one.
        async jwt(_ctx, token, jwt) {
          if (!jwt.payload.scope && token.kind === 'ClientCredentials' && token.resourceServer) {
            jwt.payload.scope = token.resourceServer.scope;
          }
        },
      },
    },
    interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
    ttl: {
      AccessToken: accessTokenTtl,
      ClientCredentials: accessTokenTtl,
      IdToken: 3600,
      RefreshToken: 24 * 3600,
      Interaction: 600,
      Session: 24 * 3600,
      Grant: 24 * 3600,
    },
    // oidc-provider refuses to call special-use addresses (127.0.0.0/8 among them) from its
    // own fetch; the back-channel logout receiver of a test is on loopback.
    fetch: (url, options) => {
      delete options.dispatcher;
      return globalThis.fetch(url, options);
    },
    async renderError(ctx, out) {
      ctx.type = 'json';
      ctx.body = out;
    },
  };
}

/** The login and consent pages: any login name with any password; consent is given at once. */
async function interaction(provider, req, res) {
  const url = new URL(req.url, 'http://127.0.0.1');
  const match = /^\/interaction\/([^/]+)(\/login)?$/.exec(url.pathname);
  if (!match) {
    res.writeHead(404).end();
    return;
  }
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== match[1]) {
    res.writeHead(400, { 'content-type': 'text/plain' }).end('interaction mismatch\n');
    return;
  }
  const { prompt, params, session } = details;

  if (match[2] && req.method === 'POST') {
    const form = await readForm(req);
    const login = form.get('login');
    if (prompt.name !== 'login' || !login) {
      res.writeHead(400, { 'content-type': 'text/plain' }).end('expected a login form with a login name\n');
      return;
    }
    await provider.interactionFinished(req, res, { login: { accountId: login } }, { mergeWithLastSubmission: false });
    return;
  }
  if (req.method !== 'GET') {
    res.writeHead(405).end();
    return;
  }

  if (prompt.name === 'login') {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
    res.end(html('Sign in', `<form method="post" action="/interaction/${escapeHtml(details.uid)}/login">`
      + '<input name="login" autofocus> <input name="password" type="password">'
      + '<button type="submit">Sign in</button></form>'));
    return;
  }
  if (prompt.name === 'consent') {
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
    const d = prompt.details;
    if (d.missingOIDCScope) grant.addOIDCScope(d.missingOIDCScope.join(' '));
    if (d.missingOIDCClaims) grant.addOIDCClaims(d.missingOIDCClaims);
    if (d.missingResourceScopes) {
      for (const [indicator, scopes] of Object.entries(d.missingResourceScopes)) {
        grant.addResourceScope(indicator, scopes.join(' '));
      }
    }
    const grantId = await grant.save();
    await provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
    return;
  }
  res.writeHead(501, { 'content-type': 'text/plain' }).end(`prompt ${prompt.name} not implemented\n`);
}

function args(config) {
  try {
    return parseArgs(config);
  } catch (err) {
    return fail(err.message);
  }
}

async function serve(argv) {
  const { values } = args({
    args: argv,
    options: {
      port: { type: 'string' },
      keys: { type: 'string' },
      'backchannel-uri': { type: 'string' },
      'access-token-ttl': { type: 'string', default: '600' },
    },
  });
  if (values.port === undefined || !/^\d+$/.test(values.port) || Number(values.port) > 65535) {
    fail('--port P is required (0 picks a free port)');
  }
  const accessTokenTtl = Number(values['access-token-ttl']);
  if (!Number.isInteger(accessTokenTtl) || accessTokenTtl <= 0) fail('--access-token-ttl must be a positive integer');
  if (values['backchannel-uri']) {
    try {
      new URL(values['backchannel-uri']); // eslint-disable-line no-new
    } catch {
      fail(`--backchannel-uri ${values['backchannel-uri']} is not a URL`);
    }
  }
  // Imported here so that genkey does not pay for it.
  const { default: Provider, errors } = await import('oidc-provider');
  const jwks = values.keys ? loadKeys(values.keys) : generateJwks('RS256');
  // The first key signs (access tokens, ID tokens, logout tokens); the others are only published.
  const alg = algOf(jwks.keys[0]);

  // Bind first so that --port 0 still gives an issuer with the real port.
  let handler = (_req, res) => res.writeHead(503).end();
  const server = http.createServer((req, res) => handler(req, res));
  server.on('error', (err) => fail(`cannot listen on 127.0.0.1:${values.port}: ${err.message}`));
  await new Promise((resolve) => server.listen(Number(values.port), '127.0.0.1', resolve));
  const issuer = `http://127.0.0.1:${server.address().port}`;

  const provider = new Provider(issuer, configuration({
    errors,
    jwks, alg, backchannelUri: values['backchannel-uri'], accessTokenTtl,
  }));
  // oidc-provider records the session id (`sid`) in codes and tokens only for clients with a
  // back-channel logout URI; the user tokens here carry it in every case.
  if (typeof provider.Client.prototype.includeSid !== 'function') {
    fail('this oidc-provider version has no Client#includeSid: see the sid note in README.md');
  }
  provider.Client.prototype.includeSid = () => true;
  provider.on('backchannel.error', (_ctx, err, client, accountId, sid) => {
    console.error(`backchannel logout to ${client.clientId} (sub ${accountId}, sid ${sid}) failed: ${err.message}`);
  });
  provider.on('server_error', (_ctx, err) => console.error('server_error', err));
  const callback = provider.callback();
  handler = (req, res) => {
    if (req.url.startsWith('/interaction/')) {
      interaction(provider, req, res).catch((err) => {
        console.error('interaction error', err);
        if (!res.headersSent) res.writeHead(400, { 'content-type': 'text/plain' });
        res.end(`${err.name}: ${err.message}\n`);
      });
      return;
    }
    callback(req, res);
  };

  const stop = () => {
    server.close(() => process.exit(0));
    server.closeAllConnections();
    setTimeout(() => process.exit(0), 1000).unref();
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  process.stdout.write(`ready ${issuer}\n`);
}

const [command, ...rest] = process.argv.slice(2);
if (command === 'genkey') {
  const { values } = args({
    args: rest,
    options: { alg: { type: 'string', default: 'RS256' }, kid: { type: 'string' } },
  });
  if (!ALGS.includes(values.alg)) fail(`unsupported --alg ${values.alg} (one of ${ALGS.join(', ')})`);
  process.stdout.write(`${JSON.stringify(generateJwks(values.alg, values.kid), null, 2)}\n`);
} else {
  await serve(process.argv.slice(2));
}
