// Shared by the compatibility scripts: credentials from the environment and a
// `fetch` that sends the SDK's https://vercel.com/api requests to emberd and
// refuses every other destination. Nothing here patches the SDK: `fetch` is a
// documented option of every static entry point (WithFetchOptions).

const VERCEL_API = "https://vercel.com/api";

function required(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
}

export const EMBER_URL = required("EMBER_URL").replace(/\/+$/, "");
export const credentials = {
  token: required("EMBER_TOKEN"),
  teamId: required("EMBER_TEAM_ID"),
  projectId: required("EMBER_PROJECT_ID"),
};

/** Every request the SDK made, as "METHOD /path" (query left out). */
export const requests = [];

const realFetch = globalThis.fetch;

function urlOf(input) {
  if (typeof input === "string") return input;
  if (input instanceof URL) return input.href;
  return input.url;
}

export async function emberFetch(input, init) {
  const url = urlOf(input);
  if (!url.startsWith(VERCEL_API + "/")) {
    throw new Error(`compat test: refusing a request to ${url}`);
  }
  const target = EMBER_URL + url.slice(VERCEL_API.length);
  requests.push(`${init?.method ?? "GET"} ${new URL(target).pathname}`);
  return realFetch(target, init);
}

// Anything that bypasses the option (it should not exist) fails loudly too.
globalThis.fetch = async (input) => {
  throw new Error(`compat test: unexpected global fetch of ${urlOf(input)}`);
};

/** The options every static SDK entry point takes. */
export const opts = { ...credentials, fetch: emberFetch };

/** A sandbox name unique to this run. */
export function uniqueName(prefix) {
  const run = process.env.EMBER_RUN_PREFIX ?? "compat";
  return `${run}-${prefix}-${Math.random().toString(36).slice(2, 8)}`;
}

/** Print the script's result as the last line of stdout, as one JSON object. */
export function report(result) {
  process.stdout.write(JSON.stringify({ ...result, requests }) + "\n");
}

export async function main(fn) {
  try {
    report(await fn());
  } catch (error) {
    process.stdout.write(
      JSON.stringify({
        error: { name: error?.name, message: String(error?.message ?? error), json: error?.json },
        requests,
      }) + "\n",
    );
    process.exitCode = 1;
  }
}
