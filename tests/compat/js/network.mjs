// Network policy: set on create, read back, changed with update() on a stopped sandbox (saved
// for the next session) or on a running one (also applied to the live session).
// Usage: node network.mjs NAME stopped|running
import { Sandbox } from "@vercel/sandbox";
import { main, opts } from "./lib.mjs";

const [name, when] = process.argv.slice(2);

await main(async () => {
  const out = {};
  const sandbox = await Sandbox.create({ ...opts, name, networkPolicy: "deny-all" });
  try {
    out.created = sandbox.networkPolicy;
    if (when === "stopped") await sandbox.stop();
    await sandbox.update({ networkPolicy: { allow: ["example.com"] } });
    out.updated = sandbox.networkPolicy;
    const again = await Sandbox.get({ ...opts, name });
    out.fetched = again.networkPolicy;
  } finally {
    await sandbox.delete({ deleteOrphanSnapshots: true });
  }
  return out;
});
