"""TLS and mTLS end to end: certificates made here with `cryptography`, a real controller
process serving them, real TLS channels (and the real grpcurl) connecting to it."""

from __future__ import annotations

import datetime
import ipaddress
import subprocess
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from automator67.v1 import node_service_pb2 as ns
from automator67.v1 import node_service_pb2_grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from .auth_helpers import Metadata
from .conftest import StartController
from .controller_process import ControllerProcess
from .test_grpcurl import grpcurl_path

CALL_TIMEOUT_S = 5.0
REFUSED = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}


@dataclass(frozen=True)
class Pem:
    cert: bytes
    key: bytes

    def write(self, folder: Path, name: str) -> tuple[str, str]:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{name}.pem").write_bytes(self.cert)
        (folder / f"{name}-key.pem").write_bytes(self.key)
        return str(folder / f"{name}.pem"), str(folder / f"{name}-key.pem")


def _issue(
    subject: str,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool = False,
    server: bool = False,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = datetime.datetime.now(datetime.UTC)
    signer_cert, signer_key = issuer if issuer else (None, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(signer_cert.subject if signer_cert else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if server:
        san = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        usage = [ExtendedKeyUsageOID.SERVER_AUTH]
        builder = builder.add_extension(x509.ExtendedKeyUsage(usage), critical=False)
    elif not ca:
        usage = [ExtendedKeyUsageOID.CLIENT_AUTH]
        builder = builder.add_extension(x509.ExtendedKeyUsage(usage), critical=False)
    return builder.sign(signer_key, hashes.SHA256()), key


def _pem(pair: tuple[x509.Certificate, ec.EllipticCurvePrivateKey]) -> Pem:
    cert, key = pair
    return Pem(
        cert.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )


@dataclass(frozen=True)
class Pki:
    ca: Pem
    server: Pem
    client: Pem  # signed by `ca`
    rogue_ca: Pem
    rogue_client: Pem  # signed by `rogue_ca`

    @classmethod
    def make(cls) -> Pki:
        ca = _issue("a67 test CA", None, ca=True)
        rogue = _issue("rogue CA", None, ca=True)
        return cls(
            ca=_pem(ca),
            server=_pem(_issue("localhost", ca, server=True)),
            client=_pem(_issue("node-agent-1", ca)),
            rogue_ca=_pem(rogue),
            rogue_client=_pem(_issue("node-agent-1", rogue)),
        )


@pytest.fixture(scope="module")
def pki() -> Pki:
    return Pki.make()


def tls_args(pki: Pki, folder: Path, *, mutual: bool) -> list[str]:
    cert, key = pki.server.write(folder, "server")
    args = ["--tls-cert-file", cert, "--tls-key-file", key]
    if mutual:
        args += ["--tls-client-ca-file", pki.ca.write(folder, "ca")[0]]
    return args


def channel_credentials(trusted: Pem, client: Pem | None = None) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=trusted.cert,
        private_key=client.key if client else None,
        certificate_chain=client.cert if client else None,
    )


async def stats_status(
    process: ControllerProcess,
    credentials: grpc.ChannelCredentials | None,
    metadata: Metadata,
) -> grpc.StatusCode:
    """How GetNodeStats ends over a channel with `credentials` (None: plaintext)."""
    address = process.address
    channel = (
        aio.secure_channel(address, credentials) if credentials else aio.insecure_channel(address)
    )
    async with channel:
        stub = node_service_pb2_grpc.NodeServiceStub(channel)
        try:
            await stub.GetNodeStats(
                ns.GetNodeStatsRequest(), metadata=metadata, timeout=CALL_TIMEOUT_S
            )
        except aio.AioRpcError as error:
            return error.code()
    return grpc.StatusCode.OK


async def test_tls_serves_only_clients_that_trust_its_certificate(
    start_controller: StartController, pki: Pki, tmp_path: Path
) -> None:
    process = start_controller(extra_args=tls_args(pki, tmp_path / "tls", mutual=False))
    admin = process.metadata
    trusting = channel_credentials(pki.ca)

    assert await stats_status(process, trusting, admin) is grpc.StatusCode.OK
    assert await stats_status(process, trusting, ()) is grpc.StatusCode.UNAUTHENTICATED
    assert await stats_status(process, None, admin) in REFUSED  # plaintext: no handshake
    assert await stats_status(process, channel_credentials(pki.rogue_ca), admin) in REFUSED
    async with aio.secure_channel(process.address, trusting) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        response = await health.Check(health_pb2.HealthCheckRequest(), timeout=CALL_TIMEOUT_S)
        assert response.status == health_pb2.HealthCheckResponse.SERVING
    line = process.log.wait_for(lambda x: x.get("msg") == "authentication is on", 5)
    assert line["transport"] == "tls"


async def test_mtls_refuses_a_client_without_a_certificate_from_its_ca(
    start_controller: StartController, pki: Pki, tmp_path: Path
) -> None:
    process = start_controller(extra_args=tls_args(pki, tmp_path / "tls", mutual=True))
    admin = process.metadata

    with_cert = channel_credentials(pki.ca, pki.client)
    assert await stats_status(process, with_cert, admin) is grpc.StatusCode.OK
    # The certificate proves the machine; the token still decides what it may do.
    assert await stats_status(process, with_cert, ()) is grpc.StatusCode.UNAUTHENTICATED
    assert await stats_status(process, channel_credentials(pki.ca), admin) in REFUSED
    rogue = channel_credentials(pki.ca, pki.rogue_client)
    assert await stats_status(process, rogue, admin) in REFUSED
    assert await stats_status(process, None, admin) in REFUSED
    line = process.log.wait_for(lambda x: x.get("msg") == "authentication is on", 5)
    assert line["transport"] == "mtls"


def test_grpcurl_speaks_mtls_with_a_bearer_token(
    start_controller: StartController, pki: Pki, tmp_path: Path
) -> None:
    folder = tmp_path / "tls"
    process = start_controller(extra_args=tls_args(pki, folder, mutual=True))
    ca, _ = pki.ca.write(folder, "ca")
    cert, key = pki.client.write(folder, "client")
    base = [grpcurl_path(), "-cacert", ca, "-cert", cert, "-key", key]
    header = f"authorization: Bearer {process.admin_token}"

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*base, *args], capture_output=True, text=True, timeout=30, check=False
        )

    listed = run("-H", header, process.address, "list")
    assert listed.returncode == 0, listed.stderr
    assert "automator67.v1.NodeService" in listed.stdout
    anonymous = run(process.address, "list")
    assert anonymous.returncode != 0 and "Unauthenticated" in anonymous.stderr
    no_cert = subprocess.run(
        [grpcurl_path(), "-cacert", ca, "-H", header, process.address, "list"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert no_cert.returncode != 0
