"""Which JWK Sets are taken: any public RSA or EC keys from a tenant's server (it may sign ES256
on P-256), and for a Backend Services client, a set with a key SMART's RS384 or ES384 verify."""

from __future__ import annotations

import pytest
from joserfc.jwk import ECKey, RSAKey

from access.keys import JwksError, check_backend_keys, check_public_jwks


def key_set(*keys: ECKey | RSAKey) -> dict[str, object]:
    return {"keys": [k.as_dict(private=False) for k in keys]}


def test_a_p256_set_is_a_tenants_but_not_a_backend_clients() -> None:
    p256 = ECKey.generate_key("P-256", parameters={"kid": "a"})
    p384 = ECKey.generate_key("P-384", parameters={"kid": "b"})
    rsa = RSAKey.generate_key(2048, parameters={"kid": "c"})
    assert check_public_jwks(key_set(p256)) == key_set(p256)
    with pytest.raises(JwksError, match="P-384"):
        check_backend_keys(check_public_jwks(key_set(p256)))
    for usable in (key_set(p256, p384), key_set(rsa)):
        assert check_backend_keys(check_public_jwks(usable)) == usable
