// Opens one URL in Debian's headless Chromium through playwright-core and waits for the page to finish its job
// (window.__edgesparseDone; the page posts its result to the edgesparse host itself).
//   node chromium_driver.mjs URL TIMEOUT_MS USER_DATA_DIR
// Page errors and crashes go to stderr; exit 0 when the page finished, 3 otherwise.
import { chromium } from 'playwright-core';

const [url, timeoutArg, userDataDir] = process.argv.slice(2);
const timeout = Number(timeoutArg);
const executablePath = process.env.EDGESPARSE_CHROMIUM || '/usr/bin/chromium';
const flags = ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync'];

let context;
let code = 0;
// The backstop: whatever happens inside the browser, this process ends.
const killer = setTimeout(() => {
  console.error(`error: chromium did not finish within ${timeout + 20000} ms`);
  process.exit(3);
}, timeout + 20000);
try {
  context = await chromium.launchPersistentContext(userDataDir, { executablePath, headless: true, args: flags, timeout: 60000 });
  console.log(`browser ${context.browser()?.version() ?? ''}`);
  const page = context.pages()[0] ?? (await context.newPage());
  page.on('pageerror', (e) => console.error(`page error: ${e.message}`));
  page.on('console', (m) => { if (m.type() === 'error') console.error(`page console: ${m.text()}`); });
  const crashed = new Promise((_, reject) => page.on('crash', () => reject(new Error('the page crashed'))));
  await page.goto(url, { timeout: 60000 });
  await Promise.race([page.waitForFunction('window.__edgesparseDone === true', null, { timeout, polling: 100 }), crashed]);
} catch (e) {
  console.error(`error: chromium: ${e.message.split('\n')[0]}`);
  code = 3;
} finally {
  if (context) await context.close().catch(() => {});
  clearTimeout(killer);
}
process.exit(code);
