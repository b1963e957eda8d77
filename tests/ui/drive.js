// The live view in a real browser: Debian's chromium, headless, driven by playwright-core.
// Started by tests/it/ui.rs (`in_a_browser`), which runs the daemon and the rollouts.
//
//   node drive.js URL SCREENSHOT_DIR rollouts
//     Watches a canary under load: the candidate's weight changes, the gate's verdict
//     appears with its checks, the rollout is promoted; then a reverted one shows its
//     reason; then a phone-sized screen. Screenshots of each state.
//   node drive.js URL SCREENSHOT_DIR token TOKEN
//     With tokens on: the page asks for one, shows the models once given it, and a new
//     tab asks again (the token stays in its tab).
//
// Throughout: no console error or warning, no uncaught error, no failed request, no
// HTTP error (but the 401 that makes the page ask for a token). Exits 1 on any, or when a
// step times out; the last line of stdout is a JSON report.
"use strict";

const path = require("path");
const { chromium } = require("playwright-core");

const [url, shots, mode, token] = process.argv.slice(2);
const STEP_MS = 90000;
const problems = [];
const report = { mode };

function watch(page, expected401) {
  page.on("console", (m) => {
    if (m.type() !== "error" && m.type() !== "warning") return;
    // Chromium's own line for the 401 the token step expects.
    if (expected401 && /status of 401/.test(m.text())) return;
    problems.push(`console ${m.type()}: ${m.text()}`);
  });
  page.on("pageerror", (e) => problems.push(`uncaught: ${e.message}`));
  page.on("requestfailed", (r) => problems.push(`request failed: ${r.url()} (${r.failure() && r.failure().errorText})`));
  page.on("response", (r) => {
    if (r.status() < 400) return;
    if (expected401 && r.status() === 401 && r.url().includes("/ui/state")) return;
    problems.push(`HTTP ${r.status()}: ${r.url()}`);
  });
}

async function shot(page, name) {
  const file = path.join(shots, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  console.log(`screenshot: ${file}`);
}

async function step(what, promise) {
  const started = Date.now();
  try {
    const value = await promise;
    console.log(`ok: ${what} (${Date.now() - started} ms)`);
    return value;
  } catch (e) {
    throw new Error(`${what}: ${e.message}`);
  }
}

// The candidate's weight in the versions table, when there is a candidate.
async function candidateWeight(page) {
  return page.evaluate(() => {
    for (const row of document.querySelectorAll(".versions tbody tr")) {
      const cells = row.querySelectorAll("th, td");
      if (cells[1] && cells[1].textContent === "candidate") return parseInt(cells[2].textContent, 10);
    }
    return null;
  });
}

async function rollouts(browser) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  watch(page, false);
  await page.goto(url);
  await step("the model appears", page.waitForSelector('section.model[data-model="m"] .versions table', { timeout: STEP_MS }));
  await shot(page, "1-before");

  // The canary: weights seen while gating, a verdict shown with its checks.
  await step("a canary step starts", page.waitForSelector('.rollout[data-phase="gating"]', { timeout: STEP_MS }));
  await step("the gate's verdict appears", page.waitForSelector('.rollout[data-phase="gating"] [data-verdict]', { timeout: STEP_MS }));
  await shot(page, "2-mid-canary");
  const checks = await page.$$eval(".rollout table tbody tr", (rows) => rows.map((r) => r.textContent));
  if (!checks.some((c) => c.includes("error rate")) || !checks.some((c) => c.includes("≤"))) {
    problems.push(`the gate's checks lack values or thresholds: ${JSON.stringify(checks)}`);
  }
  const weights = new Set();
  const deadline = Date.now() + STEP_MS;
  while (Date.now() < deadline) {
    const w = await candidateWeight(page);
    if (w !== null) weights.add(w);
    if (await page.$('.rollout[data-phase="promoted"]')) break;
    await page.waitForTimeout(200);
  }
  report.weights = [...weights].sort((a, b) => a - b);
  if (weights.size < 2) problems.push(`the candidate's weight did not change on the page: ${report.weights}`);
  await step("the promotion shows", page.waitForSelector('.rollout[data-phase="promoted"]', { timeout: 5000 }));
  await shot(page, "3-promoted");

  // The bad version: reverted, with the reason.
  await step("the revert shows", page.waitForSelector('.rollout[data-phase="reverted"] .why', { timeout: STEP_MS }));
  report.reason = await page.$eval('.rollout[data-phase="reverted"] .why', (e) => e.textContent);
  if (!/^Why: \S/.test(report.reason)) problems.push(`the revert's reason is empty: ${report.reason}`);
  report.announced = await page.$eval("#announce", (e) => e.textContent);
  if (!report.announced.includes("reverted")) problems.push(`the screen reader's live region did not announce the revert: ${report.announced}`);
  await shot(page, "4-reverted");

  // Accessible: every table has a caption, every chart a caption in words, marks in words.
  const a11y = await page.evaluate(() => ({
    uncaptioned: [...document.querySelectorAll("table")].filter((t) => !t.querySelector("caption")).length,
    charts: document.querySelectorAll("figure[data-chart]").length,
    chartsWithoutWords: [...document.querySelectorAll("figure[data-chart]")].filter((f) => !f.querySelector("figcaption").textContent.trim()).length,
    wordlessMarks: [...document.querySelectorAll(".mark")].filter((m) => !/[a-z]/i.test(m.textContent)).length,
  }));
  report.a11y = a11y;
  if (a11y.uncaptioned || a11y.chartsWithoutWords || a11y.wordlessMarks || a11y.charts < 3) problems.push(`accessibility: ${JSON.stringify(a11y)}`);

  // The report of the promoted rollout opens from the history.
  const href = await page.$eval('.history a[data-report]', (a) => a.getAttribute("href"));
  const reportPage = await context.newPage();
  watch(reportPage, false);
  const answer = await reportPage.goto(new URL(href, url).toString());
  report.report = { href, status: answer.status(), title: await reportPage.title() };
  if (answer.status() !== 200 || !report.report.title.startsWith("Deployment report")) problems.push(`the report did not open: ${JSON.stringify(report.report)}`);
  await reportPage.close();

  // A phone-sized screen: nothing wider than it.
  await page.setViewportSize({ width: 390, height: 844 });
  await page.waitForTimeout(1500);
  const widths = await page.evaluate(() => ({ page: document.documentElement.scrollWidth, screen: window.innerWidth }));
  report.narrow = widths;
  if (widths.page > widths.screen + 1) problems.push(`on a 390 px screen the page is ${widths.page} px wide`);
  await shot(page, "5-narrow");
  await context.close();
}

async function tokens(browser) {
  const context = await browser.newContext({ viewport: { width: 1024, height: 800 } });
  const page = await context.newPage();
  watch(page, true);
  await page.goto(url);
  await step("the page asks for a token", page.waitForSelector("#token-form:not([hidden])", { timeout: STEP_MS }));
  await shot(page, "6-token-asked");
  await page.fill("#token-input", token);
  await page.click("#token-form button");
  await step("the models show with the token", page.waitForSelector('section.model[data-model="m"] .versions table', { timeout: STEP_MS }));
  await shot(page, "7-token-given");
  report.kept_in_tab = await page.evaluate(() => sessionStorage.getItem("modeld-token") !== null && localStorage.length === 0 && document.cookie === "");
  if (!report.kept_in_tab) problems.push("the token is kept elsewhere than the tab's session storage");
  const other = await context.newPage();
  watch(other, true);
  await other.goto(url);
  await step("a new tab asks again", other.waitForSelector("#token-form:not([hidden])", { timeout: STEP_MS }));
  report.asked_again_in_a_new_tab = true;
  await context.close();
}

(async () => {
  const args = process.getuid && process.getuid() === 0 ? ["--no-sandbox"] : [];
  const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || "/usr/bin/chromium", args });
  let failed = null;
  try {
    if (mode === "rollouts") await rollouts(browser);
    else if (mode === "token") await tokens(browser);
    else throw new Error(`unknown mode ${mode}`);
  } catch (e) {
    failed = e.message;
  } finally {
    await browser.close();
  }
  report.problems = problems;
  if (failed) report.failed = failed;
  for (const p of problems) console.log(`problem: ${p}`);
  if (failed) console.log(`failed: ${failed}`);
  console.log(JSON.stringify(report));
  process.exit(failed || problems.length ? 1 : 0);
})();
