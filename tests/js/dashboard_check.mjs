// Drives Debian's Chromium (headless, over the DevTools protocol with puppeteer-core) through
// Parley's dashboard for a test, one JSON command a line on stdin, one JSON answer a line out.
//
//   node dashboard_check.mjs http://127.0.0.1:PORT
//
// {"op":"open","path":P}                 -> {"ok":true}
// {"op":"login","token":T}               fills the form and submits it
// {"op":"subscribed"}                    waits until the page follows the account channel
// {"op":"event","event_type":T,"within_ms":N}   waits for a row of that type; answers how long
// {"op":"rows","event_type":T}           how many rows of that type the page shows
// {"op":"click","event_type":T} then {"op":"chain"}   opens an event; its correlation chain
// {"op":"text","id":ID}                  an element's text
// {"op":"eval","js":JS}                  evaluates JS in the page
// {"op":"screenshot","path":P}  {"op":"errors"}  {"op":"quit"}

import readline from "node:readline";
import puppeteer from "puppeteer-core";

const base = process.argv[2];
const browser = await puppeteer.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
const page = await browser.newPage();
await page.setViewport({ width: 1280, height: 900 });
const errors = [];
page.on("pageerror", (e) => errors.push(`page error: ${e.message}`));
page.on("console", (m) => {
  if (m.type() === "error") errors.push(`console: ${m.text()}`);
});

const answer = (o) => process.stdout.write(JSON.stringify(o) + "\n");
const rowSelector = (type) => `#events tr[data-event-type="${type}"]`;

async function handle(c) {
  switch (c.op) {
    case "open":
      await page.goto(base + c.path, { waitUntil: "load" });
      return {};
    case "login":
      await page.type("#token", c.token);
      await page.click("#login-form button");
      return {};
    case "subscribed":
      await page.waitForSelector('body[data-subscribed="true"]', { timeout: 10000 });
      return {};
    case "event": {
      const started = Date.now();
      await page.waitForSelector(rowSelector(c.event_type), { timeout: c.within_ms });
      return { ms: Date.now() - started };
    }
    case "rows":
      return { count: await page.$$eval(rowSelector(c.event_type), (rows) => rows.length) };
    case "click":
      await page.click(rowSelector(c.event_type));
      return {};
    case "chain":
      await page.waitForSelector("#detail-chain li", { timeout: 5000 });
      return { links: await page.$$eval("#detail-chain li", (items) => items.map((i) => i.textContent)) };
    case "text":
      await page.waitForFunction((id) => document.getElementById(id).textContent.trim() !== "", { timeout: 5000 }, c.id);
      return { text: await page.$eval(`#${c.id}`, (e) => e.textContent) };
    case "eval":
      return { value: await page.evaluate(c.js) };
    case "screenshot":
      await page.screenshot({ path: c.path, fullPage: true });
      return {};
    case "errors":
      return { errors };
    case "quit":
      await browser.close();
      process.exit(0);
  }
  throw new Error(`unknown op ${c.op}`);
}

readline.createInterface({ input: process.stdin }).on("line", async (line) => {
  try {
    answer({ ok: true, ...(await handle(JSON.parse(line))) });
  } catch (e) {
    answer({ ok: false, error: String(e && e.message ? e.message : e) });
  }
});
answer({ ok: true, ready: true });
