#!/usr/bin/env python3
"""Get Tableau credentials from tableau-token-broker and list workbooks with tableauserverclient
(TSC), using the client package (clients/python, `pip install ./clients/python[tsc]`).

    python examples/python/client.py --addr 127.0.0.1:7443 \
        --ca .tableau-token-broker-demo/pki/ca.crt \
        --cert .tableau-token-broker-demo/renderer.crt \
        --key .tableau-token-broker-demo/renderer.key \
        --site finance --user svc-renderer --scope tableau:content:read

--addr, --ca, --cert, --key and --server-name default to TTB_ADDR, TTB_CA, TTB_CERT, TTB_KEY and
TTB_SERVER_NAME, as the broker's CLI reads them.
"""

import argparse
import os
import sys
from pathlib import Path

try:
    import tableau_token_broker  # noqa: F401
except ImportError:  # run from a clone without `pip install`: the package's source is pure Python
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "clients" / "python"))

import tableauserverclient as TSC

from tableau_token_broker import BrokerClient, BrokerError, tsc


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    env = os.environ.get
    p.add_argument("--addr", default=env("TTB_ADDR", "localhost:7443"))
    p.add_argument("--ca", default=env("TTB_CA"), required="TTB_CA" not in os.environ)
    p.add_argument("--cert", default=env("TTB_CERT"), required="TTB_CERT" not in os.environ)
    p.add_argument("--key", default=env("TTB_KEY"), required="TTB_KEY" not in os.environ)
    p.add_argument("--server-name", default=env("TTB_SERVER_NAME"),
                   help="name to check the broker's certificate against (default: the host of --addr)")
    p.add_argument("--site", default="finance")
    p.add_argument("--user", default="svc-renderer")
    p.add_argument("--scope", action="append", default=None)
    args = p.parse_args()
    scopes = args.scope or ["tableau:content:read"]

    with BrokerClient(args.addr, args.cert, args.key, args.ca, server_name=args.server_name) as client:
        try:
            creds = client.credentials(args.site, args.user, scopes)
            # Never print the token itself: it is a live Tableau session.
            print(f"credentials: site LUID {creds.site_luid}, from_cache={creds.from_cache}, "
                  f"server {creds.server_url}, REST API {creds.api_version}")
            server = tsc.server(client, site=args.site, user=args.user, scopes=scopes)
        except BrokerError as e:
            sys.exit(f"error: {e}")
        workbooks = list(TSC.Pager(server.workbooks))
    print(f"{len(workbooks)} workbook(s) on site {server.site_id}:")
    for wb in workbooks:
        print(f"  {wb.name} (project {wb.project_name}, id {wb.id})")


if __name__ == "__main__":
    main()
