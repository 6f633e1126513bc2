// A persistent sandbox survives a stop: `Sandbox.get` of the stopped sandbox, then a file read
// on the ended session gets a 410 and the SDK resumes transparently; `resume: true` resumes at
// once. Usage: node resume.mjs NAME
import { Sandbox } from "@vercel/sandbox";
import { main, opts } from "./lib.mjs";

const [name] = process.argv.slice(2);

await main(async () => {
  const out = {};
  const created = await Sandbox.create({ ...opts, name, persistent: true });
  try {
    out.firstSession = created.currentSession().sessionId;
    await created.writeFiles([{ path: "/vercel/sandbox/state.txt", content: "survives a stop" }]);
    await created.stop();

    const fetched = await Sandbox.get({ ...opts, name });
    out.fetched = { status: fetched.status, session: fetched.currentSession().sessionId };
    const content = await fetched.readFileToBuffer({ path: "/vercel/sandbox/state.txt" });
    out.afterResume = {
      content: content?.toString(),
      status: fetched.status,
      session: fetched.currentSession().sessionId,
    };
    const echo = await fetched.runCommand("cat", ["/vercel/sandbox/state.txt"]);
    out.commandAfterResume = { exitCode: echo.exitCode, stdout: await echo.stdout() };

    await fetched.stop();
    const resumedEvents = [];
    const eager = await Sandbox.get({
      ...opts,
      name,
      resume: true,
      onResume: async () => resumedEvents.push("resumed"),
    });
    out.eager = { status: eager.status, session: eager.currentSession().sessionId };
    out.resumedEvents = resumedEvents;
  } finally {
    await created.delete({ deleteOrphanSnapshots: true });
  }
  return out;
});
