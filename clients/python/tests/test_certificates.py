"""Certificate files rewritten in place (as csi-driver-spiffe and spiffe-helper rotate an SVID)
are used by the next connection."""

import shutil

from ttb_testing import OPS, READ, RENDERER, USER, Counting

from tableau_token_broker import BrokerClient


def test_a_certificate_swapped_on_disk_is_used_by_the_next_connection(system, tmp_path):
    cert, key = tmp_path / "svid.crt", tmp_path / "svid.key"
    rcert, rkey = system.cert("renderer")
    ocert, okey = system.cert("ops")
    shutil.copyfile(rcert, cert)
    shutil.copyfile(rkey, key)
    counting = Counting()
    # No periodic re-read: the change is noticed from the files' metadata alone.
    with BrokerClient(system.addr, str(cert), str(key), system.ca, recheck_interval=3600,
                      interceptors=[counting]) as client:
        assert client.whoami().identity == RENDERER
        renderer_creds = client.credentials("finance", USER, [READ])

        # In place: same paths, same inodes, new contents.
        cert.write_bytes(open(ocert, "rb").read())
        key.write_bytes(open(okey, "rb").read())

        assert client.whoami().identity == OPS
        # The cache is per client, not per identity: cached credentials are still served.
        assert client.credentials("finance", USER, [READ]) is renderer_creds


def test_a_half_written_rotation_keeps_the_previous_identity(system, tmp_path):
    cert, key = tmp_path / "svid.crt", tmp_path / "svid.key"
    rcert, rkey = system.cert("renderer")
    ocert, _ = system.cert("ops")
    shutil.copyfile(rcert, cert)
    shutil.copyfile(rkey, key)
    with BrokerClient(system.addr, str(cert), str(key), system.ca, recheck_interval=3600) as client:
        assert client.whoami().identity == RENDERER
        cert.write_bytes(open(ocert, "rb").read())  # the new certificate, the old key still
        assert client.whoami().identity == RENDERER
