// getOrCreate (create once, then get) and list with a tag filter and a name prefix.
// Usage: node listing.mjs PREFIX
import { Sandbox } from "@vercel/sandbox";
import { main, opts } from "./lib.mjs";

const [prefix] = process.argv.slice(2);

await main(async () => {
  const out = {};
  const made = [];
  try {
    const onCreateCalls = [];
    const first = await Sandbox.getOrCreate({
      ...opts,
      name: `${prefix}-red`,
      tags: { color: "red" },
      onCreate: async (sandbox) => onCreateCalls.push(sandbox.name),
    });
    made.push(first);
    const second = await Sandbox.getOrCreate({
      ...opts,
      name: `${prefix}-red`,
      tags: { color: "red" },
      onCreate: async (sandbox) => onCreateCalls.push(sandbox.name),
    });
    out.getOrCreate = {
      first: first.name,
      second: second.name,
      sameSession: first.currentSession().sessionId === second.currentSession().sessionId,
      onCreateCalls,
    };

    made.push(await Sandbox.create({ ...opts, name: `${prefix}-blue`, tags: { color: "blue" } }));

    const mine = (sandboxes) => sandboxes.map((s) => s.name).filter((n) => n.startsWith(prefix)).sort();
    const red = await Sandbox.list({ ...opts, tags: { color: "red" } });
    out.listRed = mine(red.sandboxes);
    out.listRedTags = red.sandboxes.filter((s) => s.name.startsWith(prefix)).map((s) => s.tags);
    const blue = await Sandbox.list({ ...opts, tags: { color: "blue" } });
    out.listBlue = mine(blue.sandboxes);
    const byPrefix = await Sandbox.list({ ...opts, namePrefix: prefix, sortBy: "name" });
    out.byPrefix = byPrefix.sandboxes.map((s) => s.name);
    out.pagination = byPrefix.pagination;
    const all = [];
    for await (const sandbox of await Sandbox.list({ ...opts, namePrefix: prefix, limit: 1 })) {
      all.push(sandbox.name);
    }
    out.paginated = all.sort();
  } finally {
    for (const sandbox of made) await sandbox.delete({ deleteOrphanSnapshots: true });
  }
  return out;
});
