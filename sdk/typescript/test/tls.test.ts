/** TLS options against a controller that serves mTLS: the CA, the client certificate and key
 * reach Node's TLS; a client without a certificate, or in plaintext, is refused. */

import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { Automator67Client, Automator67Error, Code } from "../src/index.js";
import { makeCerts, type Certs } from "./support/certs.js";
import { Controller, FAST_ARGS } from "./support/controller.js";

const certDir = mkdtempSync(join(tmpdir(), "a67-ts-certs-"));
let certs: Certs;
let controller: Controller;
const clients: Automator67Client[] = [];

before(async () => {
  certs = await makeCerts(certDir);
  controller = await new Controller([...FAST_ARGS, ...certs.serveArgs]).start();
});
after(async () => {
  for (const client of clients) client.close();
  await controller?.dispose();
  rmSync(certDir, { recursive: true, force: true });
});

function client(tls: ConstructorParameters<typeof Automator67Client>[0]["tls"]): Automator67Client {
  const made = new Automator67Client({
    address: controller.address,
    token: () => controller.adminToken, // a function: called on every call
    tls,
    timeoutMs: 5_000,
  });
  clients.push(made);
  return made;
}

test("mTLS with the CA and a client certificate", async () => {
  const a67 = client({ ca: certs.ca, cert: certs.clientCert, key: certs.clientKey });
  const stats = await a67.nodes.getNodeStats({});
  assert.equal(stats.total, 0);
});

test("the server name can differ from the address", async () => {
  const a67 = client({
    ca: certs.ca,
    cert: certs.clientCert,
    key: certs.clientKey,
    serverName: "localhost",
  });
  assert.equal((await a67.nodes.getNodeStats({})).total, 0);
});

test("refused without a client certificate, or in plaintext", async () => {
  for (const tls of [{ ca: certs.ca }, false] as const) {
    await assert.rejects(client(tls).nodes.getNodeStats({}), (e: unknown) => {
      assert.ok(e instanceof Automator67Error, String(e));
      // How a refused handshake surfaces depends on the TLS version (with 1.3 the server drops
      // the connection after it): UNAVAILABLE, CANCELLED or INTERNAL; never a response.
      assert.ok([Code.Unavailable, Code.Canceled, Code.Internal].includes(e.code), e.message);
      return true;
    });
  }
});
