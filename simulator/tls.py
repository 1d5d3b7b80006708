"""TLS for the simulator (`--tls`): a self-signed certificate generated at start-up, or one given
by path (`--cert/--key`).

The official google-genai SDK only speaks wss (it always passes an ssl context), so the Gemini
endpoint must be reachable over TLS. The generated certificate (made with the `cryptography`
package, EC P-256, valid 7 days, SAN IP:127.0.0.1, IP:::1, DNS:localhost) is written to a private
temporary folder; its path is printed as `cert PATH` so clients can trust it
(`SSL_CERT_FILE=PATH`, or the probes' `--ca-file PATH`).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
import tempfile


def generate_self_signed(folder: str | None = None) -> tuple[str, str]:
    """Write cert.pem and key.pem (0600) into `folder` (a new temp dir by default)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder = folder or tempfile.mkdtemp(prefix="voicepulse-sim-tls-")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "voicepulse simulator")])
    now = datetime.datetime.now(datetime.UTC)
    san = x509.SubjectAlternativeName([
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
        x509.DNSName("localhost"),
    ])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=7))
        .add_extension(san, critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path = os.path.join(folder, "cert.pem")
    key_path = os.path.join(folder, "key.pem")
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return cert_path, key_path


def server_context(cert_path: str, key_path: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_path, key_path)
    return ctx
