"""Populate a fresh Rucio server for the tests; run by the Rucio server's own interpreter.

Reads a JSON description on stdin (account, its password, scopes, RSEs with their directory,
type and attributes, distances) and creates it through Rucio's REST API as root, the way an
operator would with rucio-admin. Kept free of pandawms imports: it runs in the Rucio virtualenv.
"""

from __future__ import annotations

import json
import sys

from rucio.client import Client


def main() -> None:
    spec = json.load(sys.stdin)
    root = Client()
    account = spec["account"]
    root.add_account(account, "SERVICE", f"{account}@localhost")
    root.add_identity(
        account=account,
        identity=spec["username"],
        authtype="USERPASS",
        email=f"{account}@localhost",
        default=True,
        password=spec["password"],
    )
    # Admin: may add rules anywhere and register replicas on any RSE, like PanDA's own account.
    root.add_account_attribute(account, "admin", "True")
    for scope in spec["scopes"]:
        root.add_scope(account, scope)
    for rse in spec["rses"]:
        name = rse["name"]
        root.add_rse(name, deterministic=True, rse_type=rse["type"])
        root.add_protocol(
            name,
            {
                "scheme": "file",
                "hostname": "localhost",
                "port": 0,
                "prefix": rse["prefix"],
                "impl": "rucio.rse.protocols.posix.Default",
                "domains": {
                    "lan": {"read": 1, "write": 1, "delete": 1},
                    "wan": {
                        "read": 1,
                        "write": 1,
                        "delete": 1,
                        "third_party_copy_read": 1,
                        "third_party_copy_write": 1,
                    },
                },
            },
        )
        for key, value in rse.get("attributes", {}).items():
            root.add_rse_attribute(name, key, value)
        root.set_local_account_limit(account, name, rse.get("quota", 10**12))
        root.set_local_account_limit("root", name, rse.get("quota", 10**12))
    for source, destination, distance in spec["distances"]:
        root.add_distance(source, destination, {"distance": distance})
    print("ok")


if __name__ == "__main__":
    main()
