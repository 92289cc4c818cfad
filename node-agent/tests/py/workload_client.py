"""A py-spiffe (grpc C-core) workload against the agent's Workload API.

Run by node-agent/tests/workload_api_py.rs with SPIFFE_ENDPOINT_SOCKET set.
Fetches the X.509-SVIDs, the X.509 and JWT bundles and a JWT-SVID, validates
the JWT-SVID, then makes an mTLS connection between two workloads (one per
SVID) with Python's ssl module, each checking the other's SPIFFE ID. Prints
one JSON object with what it saw; any failure raises (non-zero exit).

Usage: workload_client.py TRUST_DOMAIN JWT_KID AUDIENCE
"""

import json
import socket
import ssl
import sys
import tempfile
import threading
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from spiffe import TrustDomain, WorkloadApiClient


def uri_sans(cert: dict) -> list:
    return [value for kind, value in cert.get("subjectAltName", ()) if kind == "URI"]


def write_svid(directory: Path, name: str, svid) -> tuple:
    chain = directory / f"{name}.pem"
    key = directory / f"{name}.key"
    svid.save(chain, key, serialization.Encoding.PEM)
    return str(chain), str(key)


def mtls(server_svid, client_svid, bundle_pem: str, directory: Path) -> dict:
    server_chain, server_key = write_svid(directory, "server", server_svid)
    client_chain, client_key = write_svid(directory, "client", client_svid)

    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(server_chain, server_key)
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    server_ctx.load_verify_locations(bundle_pem)

    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    # SPIFFE peers are identified by URI SAN, not hostname.
    client_ctx.check_hostname = False
    client_ctx.verify_mode = ssl.CERT_REQUIRED
    client_ctx.load_verify_locations(bundle_pem)
    client_ctx.load_cert_chain(client_chain, client_key)

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    seen = {}

    def serve():
        conn, _ = listener.accept()
        with server_ctx.wrap_socket(conn, server_side=True) as tls:
            seen["server_saw"] = uri_sans(tls.getpeercert())
            tls.sendall(tls.recv(64).upper())

    thread = threading.Thread(target=serve)
    thread.start()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with client_ctx.wrap_socket(raw) as tls:
            seen["client_saw"] = uri_sans(tls.getpeercert())
            tls.sendall(b"ping")
            seen["echo"] = tls.recv(64).decode()
    thread.join(10)
    listener.close()
    return seen


def main() -> None:
    trust_domain, kid, audience = sys.argv[1:4]
    client = WorkloadApiClient(default_timeout=20)
    try:
        svids = client.fetch_x509_svids()
        context = client.fetch_x509_context()
        x509_bundles = client.fetch_x509_bundles()
        jwt_bundles = client.fetch_jwt_bundles()
        jwt_svid = client.fetch_jwt_svid(audience={audience})
        validated = client.validate_jwt_svid(jwt_svid.token, audience)
    finally:
        client.close()

    td = TrustDomain(trust_domain)
    jwt_bundle = jwt_bundles.get_bundle_for_trust_domain(td)
    x509_bundle = context.x509_bundle_set.get_bundle_for_trust_domain(td)
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        bundle_pem = directory / "bundle.pem"
        x509_bundle.save(bundle_pem, serialization.Encoding.PEM)
        seen = mtls(svids[0], svids[1], str(bundle_pem), directory)

    print(json.dumps({
        "svids": [str(s.spiffe_id) for s in svids],
        "x509_bundle_domains": sorted(str(b.trust_domain) for b in x509_bundles.bundles),
        "jwt_has_kid": jwt_bundle is not None and jwt_bundle.get_jwt_authority(kid) is not None,
        "jwt_subject": str(jwt_svid.spiffe_id),
        "validated_subject": str(validated.spiffe_id),
        "mtls": seen,
    }))


if __name__ == "__main__":
    main()
