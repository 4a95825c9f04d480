/** Certificates for the TLS tests, made with the `cryptography` package the controller already
 * depends on (as tests/e2e/test_tls.py makes them): a CA, a server certificate for 127.0.0.1
 * and localhost, and a client certificate, all signed by the CA, written as PEM files. */

import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { PYTHON, ROOT } from "./controller.js";

const SCRIPT = `
import datetime, ipaddress, sys
from pathlib import Path
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

out = Path(sys.argv[1])
now = datetime.datetime.now(datetime.timezone.utc)

def issue(name, signer, ca=False, usage=None, san=None):
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    signer_cert, signer_key = signer if signer else (None, key)
    b = (x509.CertificateBuilder().subject_name(subject)
         .issuer_name(signer_cert.subject if signer_cert else subject)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(minutes=5))
         .not_valid_after(now + datetime.timedelta(days=1))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if usage:
        b = b.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if san:
        b = b.add_extension(x509.SubjectAlternativeName(san), critical=False)
    cert = b.sign(signer_key, hashes.SHA256())
    (out / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (out / f"{name}-key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return cert, key

ca = issue("ca", None, ca=True)
issue("server", ca, usage=ExtendedKeyUsageOID.SERVER_AUTH,
      san=[x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
issue("client", ca, usage=ExtendedKeyUsageOID.CLIENT_AUTH)
`;

export interface Certs {
  readonly dir: string;
  readonly ca: string;
  readonly clientCert: string;
  readonly clientKey: string;
  /** The controller's flags: serve TLS, and require client certificates signed by the CA. */
  readonly serveArgs: readonly string[];
}

export async function makeCerts(dir: string): Promise<Certs> {
  await promisify(execFile)(PYTHON, ["-c", SCRIPT, dir], { cwd: ROOT });
  const file = (name: string): string => join(dir, name);
  return {
    dir,
    ca: readFileSync(file("ca.pem"), "utf8"),
    clientCert: readFileSync(file("client.pem"), "utf8"),
    clientKey: readFileSync(file("client-key.pem"), "utf8"),
    serveArgs: [
      ...["--tls-cert-file", file("server.pem")],
      ...["--tls-key-file", file("server-key.pem")],
      ...["--tls-client-ca-file", file("ca.pem")],
    ],
  };
}
