// The page forms still work for a browser that sends no Fetch Metadata (`Sec-Fetch-*`), as
// older browsers and some privacy proxies do: Debian's chromium, driven by playwright-core,
// talks to tokengate through a small proxy that strips every `sec-fetch-*` request header.
// The same-origin check then rests on `Origin`, which a browser sends as `null` on a
// same-origin form POST when the page's Referrer-Policy is `no-referrer`: the sign-in form
// and "Sign out everywhere" must still go through, and a cross-site POST must still fail.
//
// usage: node no-fetch-metadata.mjs BASE_URL EMAIL PASSWORD
import http from 'node:http';
import { launchChromium } from './launch.mjs';

const [base, email, password] = process.argv.slice(2);
if (!password) {
  console.error('usage: node no-fetch-metadata.mjs BASE_URL EMAIL PASSWORD');
  process.exit(2);
}
const upstream = new URL(base);

function check(condition, message) {
  if (!condition) throw new Error(`FAIL: ${message}`);
  console.log(`ok: ${message}`);
}

// The origins the proxy saw on POSTs, for the report.
const postOrigins = [];
const proxy = http.createServer((req, res) => {
  const headers = { ...req.headers };
  for (const name of Object.keys(headers)) {
    if (name.startsWith('sec-fetch-')) delete headers[name];
  }
  if (req.method === 'POST') postOrigins.push(`${req.url} Origin: ${headers.origin ?? '(none)'}`);
  // The Host header is kept: tokengate compares Origin with the Host the browser used.
  const forward = http.request(
    { host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers },
    (answer) => {
      res.writeHead(answer.statusCode, answer.headers);
      answer.pipe(res);
    },
  );
  forward.on('error', (error) => {
    res.writeHead(502);
    res.end(String(error));
  });
  req.pipe(forward);
});
await new Promise((resolve) => proxy.listen(0, '127.0.0.1', resolve));
const front = `http://127.0.0.1:${proxy.address().port}`;

const browser = await launchChromium();

try {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(`${front}/`);
  await page.getByLabel('Email').fill(email);
  await page.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.waitForLoadState();
  check(
    page.url() === `${front}/account/sessions`,
    `the sign-in form goes through without Sec-Fetch-* (landed on ${page.url()}; POSTs seen: ${postOrigins.join('; ')})`,
  );

  await page.getByRole('button', { name: /everywhere/i }).click();
  await page.waitForLoadState();
  check(
    page.url().includes('m=signedout_all'),
    `"Sign out everywhere" goes through without Sec-Fetch-* (landed on ${page.url()})`,
  );

  // A cross-site form POST (another origin, no Sec-Fetch-* either) is still refused.
  await page.goto(`${front}/`);
  await page.getByLabel('Email').fill(email);
  await page.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.waitForURL(`${front}/account/sessions`);
  const attacker = http.createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'text/html' });
    res.end(`<form method="post" action="${front}/account/signout-all"><input name="csrf" value="x"></form>
      <script>document.forms[0].submit()</script>`);
  });
  await new Promise((resolve) => attacker.listen(0, '127.0.0.2', resolve));
  const attack = await context.newPage();
  await attack.goto(`http://127.0.0.2:${attacker.address().port}/`);
  // The form submits itself to tokengate; wait until the browser has left the attacker.
  await attack.waitForURL((url) => url.origin === front);
  await attack.waitForLoadState();
  check(!attack.url().includes('signedout_all'), `a cross-site form POST does not sign out (${attack.url()})`);
  await page.goto(`${front}/account/sessions`);
  check(page.url() === `${front}/account/sessions`, 'the session survived the cross-site POST');
  attacker.close();
} finally {
  await browser.close();
  proxy.close();
}
