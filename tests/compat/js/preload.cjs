// Loaded with `node --require` before Vercel's unmodified `sandbox` CLI. The CLI has no option
// for the API host, so this replaces the global fetch (which the CLI and its embedded SDK use):
//
// * https://vercel.com/api/...  ->  EMBER_URL/...  (the Sandbox API)
// * https://<EMBER_URL's host>/health  ->  EMBER_URL/health  (the probe `sandbox connect` makes
//   before opening a terminal's WebSocket: the CLI hard-codes https and drops the port, which a
//   plain-HTTP emberd on a loopback port cannot serve)
// * anything else (telemetry, version checks, OIDC discovery, login): refused with an error.
//
// Set EMBER_FETCH_LOG to a file to record each request as "METHOD /path?query", one a line.
"use strict";

const fs = require("node:fs");

const VERCEL_API = "https://vercel.com/api";
const target = (process.env.EMBER_URL || "").replace(/\/+$/, "");
if (!target) throw new Error("preload: EMBER_URL is not set");
const terminalHealth = `https://${new URL(target).hostname}/health`;
const log = process.env.EMBER_FETCH_LOG;
const realFetch = globalThis.fetch;

function urlOf(input) {
  if (typeof input === "string") return input;
  if (input instanceof URL) return input.href;
  return input.url;
}

function rewrite(url) {
  if (url.startsWith(VERCEL_API + "/")) return target + url.slice(VERCEL_API.length);
  if (url === terminalHealth) return target + "/health";
  throw new Error(`compat preload: refusing a request to ${url}`);
}

globalThis.fetch = async function emberFetch(input, init) {
  const rewritten = rewrite(urlOf(input));
  if (log) {
    const method = (init && init.method) || (typeof input === "object" && input.method) || "GET";
    const { pathname, search } = new URL(rewritten);
    fs.appendFileSync(log, `${method} ${pathname}${search}\n`);
  }
  if (typeof input === "object" && !(input instanceof URL)) {
    return realFetch(new Request(rewritten, input), init);
  }
  return realFetch(rewritten, init);
};
