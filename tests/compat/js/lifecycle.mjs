// create (tags, env, ports), runCommand blocking and detached with logs, kill, writeFiles /
// readFile, mkDir, extendTimeout, stop, delete. Usage: node lifecycle.mjs NAME
import { Sandbox } from "@vercel/sandbox";
import { main, opts } from "./lib.mjs";

const [name] = process.argv.slice(2);

await main(async () => {
  const out = {};
  const sandbox = await Sandbox.create({
    ...opts,
    name,
    tags: { suite: "compat", flow: "lifecycle" },
    env: { GREETING: "hello from env" },
    ports: [3000],
    persistent: true,
    timeout: 120_000,
  });
  try {
    out.created = {
      name: sandbox.name,
      status: sandbox.status,
      persistent: sandbox.persistent,
      tags: sandbox.tags,
      routes: sandbox.routes,
      cwd: sandbox.cwd,
      sessionTimeout: sandbox.currentSession().timeout,
    };

    const blocking = await sandbox.runCommand("sh", [
      "-c",
      'echo "$GREETING"; echo to-stderr >&2; exit 3',
    ]);
    out.blocking = {
      exitCode: blocking.exitCode,
      stdout: await blocking.stdout(),
      stderr: await blocking.stderr(),
      cmdId: blocking.cmdId,
    };

    const withOptions = await sandbox.runCommand({
      cmd: "sh",
      args: ["-c", 'pwd; echo "$EXTRA"'],
      cwd: "/tmp",
      env: { EXTRA: "per-command" },
    });
    out.withOptions = { exitCode: withOptions.exitCode, stdout: await withOptions.stdout() };

    const detached = await sandbox.runCommand({
      cmd: "sh",
      args: ["-c", "for i in 1 2 3; do echo line$i; sleep 0.2; done; echo finished >&2; exit 5"],
      detached: true,
    });
    out.detachedStartExitCode = detached.exitCode ?? null;
    const logs = [];
    for await (const log of detached.logs()) logs.push(log);
    const finished = await detached.wait();
    out.detached = {
      logs,
      exitCode: finished.exitCode,
      stdout: await finished.stdout(),
      stderr: await finished.stderr(),
    };

    const sleeper = await sandbox.runCommand({ cmd: "sleep", args: ["600"], detached: true });
    await sleeper.kill("SIGTERM");
    out.killed = { exitCode: (await sleeper.wait()).exitCode };

    await sandbox.writeFiles([
      { path: "/tmp/compat/nested/hello.txt", content: "written by the JS SDK\n" },
      { path: "relative.bin", content: Uint8Array.from([0, 1, 2, 250, 255]) },
    ]);
    out.read = {
      absolute: (await sandbox.readFileToBuffer({ path: "/tmp/compat/nested/hello.txt" }))?.toString(),
      relative: [...((await sandbox.readFileToBuffer({ path: "relative.bin" })) ?? [])],
      withCwd: (await sandbox.readFileToBuffer({ path: "hello.txt", cwd: "/tmp/compat/nested" }))?.toString(),
      missing: await sandbox.readFileToBuffer({ path: "/tmp/compat/no-such-file" }),
    };

    await sandbox.mkDir("/tmp/compat/made-by-mkdir");
    const isDir = await sandbox.runCommand("test", ["-d", "/tmp/compat/made-by-mkdir"]);
    out.mkDir = { testExitCode: isDir.exitCode };

    const before = sandbox.currentSession().timeout;
    await sandbox.extendTimeout(60_000);
    out.extendTimeout = { before, after: sandbox.currentSession().timeout };

    const stopped = await sandbox.stop();
    out.stopped = { status: stopped.status, sandboxStatus: sandbox.status };
  } finally {
    await sandbox.delete({ deleteOrphanSnapshots: true });
  }
  out.deleted = true;
  return out;
});
