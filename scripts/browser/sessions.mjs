// The browser check of issue 8 (run by .ci/checks/browser): Debian's chromium, driven by
// playwright-core, signs in to a running tokengate from two browser contexts through the
// `/` form, sees both sessions on /account/sessions, signs the other one out with its
// button, and checks that the other context's cookie token is then refused by
// GET /v1/verify. Saves a screenshot of the sessions page.
//
// usage: node sessions.mjs BASE_URL EMAIL PASSWORD SCREENSHOT_PATH
import { launchChromium } from './launch.mjs';

const [base, email, password, screenshot] = process.argv.slice(2);
if (!screenshot) {
  console.error('usage: node sessions.mjs BASE_URL EMAIL PASSWORD SCREENSHOT_PATH');
  process.exit(2);
}

function check(condition, message) {
  if (!condition) throw new Error(`FAIL: ${message}`);
  console.log(`ok: ${message}`);
}

const browser = await launchChromium();

async function signIn(context) {
  const page = await context.newPage();
  await page.goto(`${base}/`);
  await page.getByLabel('Email').fill(email);
  await page.getByLabel('Password').fill(password);
  await Promise.all([
    page.waitForURL(`${base}/account/sessions`),
    page.getByRole('button', { name: 'Sign in' }).click(),
  ]);
  return page;
}

async function sessionCookie(context) {
  const cookies = await context.cookies(base);
  const cookie = cookies.find((c) => c.name === 'tokengate_session');
  if (!cookie) throw new Error('no tokengate_session cookie');
  if (!cookie.httpOnly || cookie.sameSite !== 'Lax') {
    throw new Error(`cookie flags: ${JSON.stringify(cookie)}`);
  }
  return cookie.value;
}

async function verify(token) {
  const response = await fetch(`${base}/v1/verify`, { headers: { authorization: `Bearer ${token}` } });
  return response.status;
}

try {
  // A phone-width context and a desktop one, each its own cookie jar.
  const phone = await browser.newContext({
    viewport: { width: 390, height: 844 },
    deviceScaleFactor: 2,
    userAgent: 'Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Mobile Safari/537.36',
  });
  const desktop = await browser.newContext({ viewport: { width: 1280, height: 800 } });

  // A wrong password shows the message first.
  const wrong = await phone.newPage();
  await wrong.goto(`${base}/`);
  await wrong.getByLabel('Email').fill(email);
  await wrong.getByLabel('Password').fill('not the password');
  await wrong.getByRole('button', { name: 'Sign in' }).click();
  await wrong.getByText('Wrong email or password.').waitFor();
  check(true, 'a wrong password shows "Wrong email or password."');
  await wrong.close();

  const phonePage = await signIn(phone);
  const otherPage = await signIn(desktop);
  const otherToken = await sessionCookie(desktop);
  await sessionCookie(phone);
  check((await verify(otherToken)) === 200, "the other context's token verifies before sign-out");

  await phonePage.reload();
  const rows = phonePage.locator('li.session');
  check((await rows.count()) === 2, 'the sessions page lists two sessions');
  check((await phonePage.locator('li.session.current').count()) === 1, 'one session is marked "This device"');
  check(
    (await phonePage.locator('li.session.current .device').innerText()).includes('Chrome on Android'),
    'this device is described from its user agent',
  );

  // Sign the OTHER session out with its button (keyboard: focus it and press Enter).
  const other = phonePage.locator('li.session:not(.current)');
  const button = other.getByRole('button', { name: /^Sign out/ });
  await button.focus();
  await Promise.all([
    phonePage.waitForURL(/\/account\/sessions\?m=ended$/),
    phonePage.keyboard.press('Enter'),
  ]);
  await phonePage.getByText('That session is signed out.').waitFor();
  check((await rows.count()) === 1, 'one session is left on the page');
  check((await verify(otherToken)) === 401, "the other context's cookie token is refused by /v1/verify");

  // The signed-out context is sent to the sign-in page with a message.
  await otherPage.goto(`${base}/account/sessions`);
  await otherPage.getByText('This session was signed out.').waitFor();
  check(otherPage.url().startsWith(`${base}/`), 'the signed-out browser lands on the sign-in page');

  // Screenshot of the sessions page with both sessions: sign the desktop in again.
  await signIn(desktop);
  await phonePage.goto(`${base}/account/sessions`);
  check((await rows.count()) === 2, 'two sessions again after the desktop signs in anew');
  await phonePage.screenshot({ path: screenshot, fullPage: true });
  console.log(`screenshot: ${screenshot}`);
} finally {
  await browser.close();
}
