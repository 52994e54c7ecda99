"""CPython's own hmac and PyJWT accept the firmware's client assertion (golden bytes of test_jwt)."""

import base64
import hashlib
import hmac

import jwt as pyjwt
import pytest
from test_jwt import GOLDEN
from vectors import ASSERTION_INPUTS


def test_cpython_hmac_verifies_golden_assertion() -> None:
    signing_input, _, signature = GOLDEN.rpartition(".")
    mac = hmac.new(ASSERTION_INPUTS[2].encode(), signing_input.encode(), hashlib.sha256).digest()
    assert base64.urlsafe_b64encode(mac).rstrip(b"=").decode() == signature


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
def test_pyjwt_decodes_golden_assertion() -> None:
    claims = pyjwt.decode(
        GOLDEN,
        ASSERTION_INPUTS[2],
        algorithms=["HS256"],
        audience="southgate",
        options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},
    )
    assert claims["iss"] == ASSERTION_INPUTS[0]
    assert claims["ten"] == ASSERTION_INPUTS[1]
