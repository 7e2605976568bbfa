"""HTTPS: the connection goes to the checked address while TLS verifies the certificate
against the name and sends it as SNI (a real TLS server on loopback, a CA made here)."""

from __future__ import annotations

import datetime
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from egress_kit import make_policy

from shieldwall.egress.http_tool import EgressClient


def _cert(tmp: Path, name: str) -> tuple[Path, Path, Path]:
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "shieldwall test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(1)
          .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(2)
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    ca_p, cert_p, key_p = tmp / "ca.pem", tmp / "cert.pem", tmp / "key.pem"
    ca_p.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_p.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_p.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()))
    return ca_p, cert_p, key_p


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[int, Path, list[str]]]:
    ca, cert, key = _cert(tmp_path, "allowed.test")
    sni: list[str] = []

    class H(BaseHTTPRequestHandler):
        def log_message(self, *a: Any) -> None:
            pass

        def do_GET(self) -> None:
            body = b"secure hello"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    ctx.sni_callback = lambda sock, name, c: sni.append(name)  # type: ignore[assignment,misc,return-value]
    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv.server_address[1], ca, sni
    srv.shutdown()
    srv.server_close()


def test_https_connects_to_checked_ip_and_verifies_the_name(tls_server) -> None:
    port, ca, sni = tls_server
    p = make_policy(port)
    with EgressClient(p, role="reader", ssl_context=ssl.create_default_context(cafile=str(ca))) as c:
        r = c.request("GET", f"https://allowed.test:{port}/")
    assert (r.status, r.body) == (200, b"secure hello")
    assert sni == ["allowed.test"]


def test_https_to_a_name_the_certificate_does_not_cover_fails(tls_server) -> None:
    port, ca, _ = tls_server
    p = make_policy(port)  # api.allowed.test also resolves to 127.0.0.1 in the test resolver
    with EgressClient(p, role="reader", ssl_context=ssl.create_default_context(cafile=str(ca))) as c:
        with pytest.raises(Exception, match=r"(?i)certificate|hostname"):
            c.request("GET", f"https://api.allowed.test:{port}/")
