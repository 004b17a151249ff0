"""AT Protocol identity (issue 18) against a real PDS and PLC directory on
loopback (tests/atproto/pds.mjs, see atproto_pds.py)."""

import json
import urllib.error
import urllib.parse

import pytest

from atproto_pds import Pds

ALICE = ("alice.test", "alice-password-1")
BOB = ("bob.test", "bob-password-1")


@pytest.fixture(scope="module")
def pds(tmp_path_factory):
    p = Pds(str(tmp_path_factory.mktemp("pds")), [ALICE, BOB])
    yield p
    p.close()


def test_pds_account_handle_and_did_document(pds):
    alice = pds.accounts["alice.test"]
    assert alice["did"].startswith("did:plc:")
    # The account exists in the PDS's repository store.
    status, body = pds.get(f"{pds.pds}/xrpc/com.atproto.repo.describeRepo?repo="
                           + urllib.parse.quote(alice["did"]))
    assert status == 200 and json.loads(body)["handle"] == "alice.test"
    # Its handle resolves to its DID the way https://alice.test would.
    status, body = pds.get(f"{pds.pds}/.well-known/atproto-did", host="alice.test")
    assert (status, body.strip()) == (200, alice["did"])
    # Its DID document, from the PLC directory, names this PDS and handle.
    status, body = pds.get(f"{pds.plc}/{alice['did']}")
    doc = json.loads(body)
    assert doc["id"] == alice["did"]
    assert "at://alice.test" in doc["alsoKnownAs"]
    svc = [s for s in doc["service"] if s["id"] == "#atproto_pds"]
    assert svc and svc[0]["type"] == "AtprotoPersonalDataServer"
    assert svc[0]["serviceEndpoint"] == pds.pds
    # Bob is another DID; a handle nobody has is not found.
    assert pds.accounts["bob.test"]["did"] != alice["did"]
    with pytest.raises(urllib.error.HTTPError) as e:
        pds.get(f"{pds.pds}/.well-known/atproto-did", host="nobody.test")
    assert e.value.code == 404
