// snapshot, Snapshot.list / get / tree / delete, create from a snapshot, fork.
// Usage: node snapshots.mjs NAME
import { Sandbox, Snapshot } from "@vercel/sandbox";
import { main, opts } from "./lib.mjs";

const [name] = process.argv.slice(2);

await main(async () => {
  const out = {};
  const made = [];
  try {
    const source = await Sandbox.create({ ...opts, name, persistent: true });
    made.push(source);
    const sourceSession = source.currentSession().sessionId;
    await source.writeFiles([{ path: "/vercel/sandbox/snap.txt", content: "in the snapshot" }]);

    const snapshot = await source.snapshot({ expiration: 86_400_000 });
    out.snapshot = {
      id: snapshot.snapshotId,
      status: snapshot.status,
      sourceSessionId: snapshot.sourceSessionId,
      expectedSourceSession: sourceSession,
      sizeBytes: snapshot.sizeBytes,
      hasExpiry: snapshot.expiresAt instanceof Date,
      sessionStatus: source.currentSession().status,
    };

    const listed = await Snapshot.list({ ...opts, name });
    out.listed = listed.snapshots.map((s) => s.id);
    const got = await Snapshot.get({ ...opts, snapshotId: snapshot.snapshotId });
    out.got = { id: got.snapshotId, status: got.status, regions: got.regions };
    const tree = await Snapshot.tree({ ...opts, snapshotId: snapshot.snapshotId });
    out.tree = {
      nodes: tree.snapshots.map((n) => n.snapshot.id),
      anchor: tree.anchor?.snapshot.id,
    };

    const restored = await Sandbox.create({
      ...opts,
      name: `${name}-restored`,
      source: { type: "snapshot", snapshotId: snapshot.snapshotId },
    });
    made.push(restored);
    out.restored = {
      content: (await restored.readFileToBuffer({ path: "/vercel/sandbox/snap.txt" }))?.toString(),
      sourceSnapshotId: restored.sourceSnapshotId,
    };

    const fork = await Sandbox.fork({ ...opts, sourceSandbox: name, name: `${name}-fork` });
    made.push(fork);
    out.fork = {
      name: fork.name,
      content: (await fork.readFileToBuffer({ path: "/vercel/sandbox/snap.txt" }))?.toString(),
    };

    await restored.delete();
    made.splice(made.indexOf(restored), 1);
    await got.delete();
    out.deleted = { status: got.status };
    out.afterDelete = (await Snapshot.get({ ...opts, snapshotId: snapshot.snapshotId })).status;
  } finally {
    for (const sandbox of made) await sandbox.delete({ deleteOrphanSnapshots: true });
  }
  return out;
});
