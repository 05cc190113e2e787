// Debian's chromium, headless, for the browser checks: playwright-core drives it, and its
// own browser download is never used. The flags keep Chromium off the (closed) network.
import { chromium } from 'playwright-core';

export function launchChromium() {
  // playwright gives a non-persistent launch a fresh temporary profile (--user-data-dir) of
  // its own, removed on close.
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
  });
}
