/**
 * The real controller as a child process, as the Python e2e suite runs it
 * (tests/e2e/controller_process.py): `python -m controller serve` on 127.0.0.1 with a temporary
 * data folder and authentication on. `start()` returns once the server logs its `serving` line,
 * which carries the port; tokens are made with `python -m controller token create` on the same
 * data folder, so they are signed with the key the server generated there.
 *
 * The Python is $AUTOMATOR67_PYTHON (the pytest wrapper passes its own), else the repository's
 * .venv/bin/python. The controller runs from this repository, or from $AUTOMATOR67_CONTROLLER_DIR
 * (another checkout, e.g. a release to test the SDK against).
 */

import { spawn, execFile, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { Automator67Client } from "../../src/index.js";

// dist/test/support/ -> the repository root
export const ROOT = fileURLToPath(new URL("../../../../../", import.meta.url));
export const PYTHON = process.env.AUTOMATOR67_PYTHON ?? join(ROOT, ".venv", "bin", "python");
const CONTROLLER_DIR = process.env.AUTOMATOR67_CONTROLLER_DIR ?? ROOT;
const START_TIMEOUT_MS = 30_000;
const STOP_TIMEOUT_MS = 15_000;

/** Heartbeats every 0.2 s; nothing turns SUSPECT during a test unless a stream breaks. */
export const FAST_ARGS = [
  ...["--heartbeat-interval-s", "0.2"],
  ...["--suspect-after-s", "3"],
  ...["--offline-after-s", "6"],
  ...["--failover-grace-s", "6"],
  ...["--shutdown-grace-s", "1"],
];

type LogLine = Record<string, unknown>;

/** This environment without the controller's own settings (a developer's A67_*, PORT). */
function controllerEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (!key.startsWith("A67_") && key !== "PORT" && key !== "LOG_LEVEL") env[key] = value;
  }
  return env;
}

/** A free TCP port of 127.0.0.1, for a controller that must keep its port across a restart. */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address !== null ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

export class Controller {
  readonly dataDir = mkdtempSync(join(tmpdir(), "a67-ts-sdk-"));
  port = 0;
  adminToken = "";
  readonly lines: LogLine[] = [];
  private child: ChildProcess | undefined;
  private readonly clients: Automator67Client[] = [];

  constructor(
    private readonly extraArgs: readonly string[] = FAST_ARGS,
    private readonly fixedPort = 0,
  ) {}

  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  async start(): Promise<this> {
    if (this.child !== undefined) throw new Error("already running");
    const args = ["-m", "controller", "serve", "--port", String(this.fixedPort)];
    args.push("--data-dir", this.dataDir, ...this.extraArgs);
    const child = spawn(PYTHON, args, {
      cwd: CONTROLLER_DIR,
      env: { ...controllerEnv(), LOG_LEVEL: "info" },
      stdio: ["ignore", "ignore", "pipe"],
    });
    this.child = child;
    const serving = new Promise<LogLine>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(this.failure("no serving line"))),
        START_TIMEOUT_MS,
      );
      createInterface({ input: child.stderr! }).on("line", (text) => {
        let line: LogLine;
        try {
          line = JSON.parse(text) as LogLine;
        } catch {
          line = { raw: text };
        }
        this.lines.push(line);
        if (line.msg === "serving") {
          clearTimeout(timer);
          resolve(line);
        }
      });
      child.once("exit", (code) => {
        clearTimeout(timer);
        reject(new Error(this.failure(`the controller exited with ${code}`)));
      });
    });
    const line = await serving;
    if (line.address !== "127.0.0.1")
      throw new Error(`served beyond loopback: ${JSON.stringify(line)}`);
    this.port = Number(line.port);
    if (this.adminToken === "") this.adminToken = await this.token("admin");
    return this;
  }

  /** SIGTERM, then waits for the exit. */
  async stop(): Promise<void> {
    const child = this.child;
    if (child === undefined) return;
    this.child = undefined;
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
    child.kill("SIGTERM");
    const timer = setTimeout(() => child.kill("SIGKILL"), STOP_TIMEOUT_MS);
    await exited;
    clearTimeout(timer);
  }

  /** Closes every client made by `client()`, stops the process, removes the data folder. */
  async dispose(): Promise<void> {
    for (const client of this.clients.splice(0)) client.close();
    await this.stop();
    rmSync(this.dataDir, { recursive: true, force: true });
  }

  /** A token of `role` signed with this controller's key. */
  async token(role: "admin" | "operator" | "viewer" | "node", node?: string): Promise<string> {
    const args = [
      "-m",
      "controller",
      "token",
      "create",
      "--role",
      role,
      "--data-dir",
      this.dataDir,
    ];
    if (node !== undefined) args.push("--node", node);
    const { stdout } = await promisify(execFile)(PYTHON, args, {
      cwd: CONTROLLER_DIR,
      env: controllerEnv(),
    });
    return stdout.trim();
  }

  /** A client of this controller with `token` (the admin token by default); closed at dispose. */
  client(token: string = this.adminToken): Automator67Client {
    const client = new Automator67Client({ address: this.address, token, timeoutMs: 10_000 });
    this.clients.push(client);
    return client;
  }

  private failure(why: string): string {
    return `${why}; stderr was:\n${this.lines.map((l) => JSON.stringify(l)).join("\n")}`;
  }
}

/** A small valid node registration (the Python suite's seed node). */
export function seedNode(changes: Record<string, unknown> = {}) {
  return {
    provider: "render",
    endpoint: "https://api.render.com",
    region: "us-east-1",
    credentials: {
      oauthTokenEncrypted: "token123",
      oauthProvider: "github",
      oauthExpiresAt: 1700000000000n,
    },
    capabilities: { cpuCores: 4, memoryGb: 8, diskGb: 50, networkBandwidth: "1Gbps" },
    ...changes,
  };
}

/** Resolves with the first item of `source` that `predicate` accepts, within `timeoutMs`. */
export async function firstOf<T>(
  source: AsyncIterator<T>,
  predicate: (item: T) => boolean,
  timeoutMs = 10_000,
): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`nothing matched within ${timeoutMs} ms`)),
      timeoutMs,
    );
  });
  try {
    for (;;) {
      const next = await Promise.race([source.next(), timeout]);
      if (next.done === true) throw new Error("the stream ended before a match");
      if (predicate(next.value)) return next.value;
    }
  } finally {
    clearTimeout(timer);
  }
}
