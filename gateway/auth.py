"""API keys: who is calling. Each key names a tenant, and a tenant sees only its own jobs.

Keys come from `gateway.api_keys` (tenant → key, or tenant → "sha256:<hex>" of the key, so the config
need not hold the key itself). Every presented key is hashed and compared with every stored digest in
constant time, so neither a key's value nor which tenant it belongs to leaks through timing.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Mapping

from pydantic import SecretStr

from arkq.errors import ConfigError
from producer.producer import JOB_ID_PATTERN

SHA256_PREFIX = "sha256:"
#: The tenant of every job when the gateway runs without keys (loopback only).
ANONYMOUS = "anonymous"


class Keys:
    """The configured keys, as SHA-256 digests."""

    def __init__(self, api_keys: Mapping[str, SecretStr]):
        self._digests: list[tuple[bytes, str]] = []
        self._by_tenant: dict[str, bytes] = {}
        for tenant, secret in api_keys.items():
            if not JOB_ID_PATTERN.fullmatch(tenant):
                raise ConfigError(
                    f"gateway.api_keys: tenant name {tenant!r} must be 1-128 letters, digits or _.:-"
                )
            key = secret.get_secret_value()
            if key.startswith(SHA256_PREFIX):
                try:
                    digest = bytes.fromhex(key[len(SHA256_PREFIX) :])
                except ValueError:
                    digest = b""
                if len(digest) != 32:
                    raise ConfigError(f"gateway.api_keys.{tenant}: sha256: must be followed by 64 hex digits")
            elif not key:
                raise ConfigError(f"gateway.api_keys.{tenant}: the key is empty")
            else:
                digest = hashlib.sha256(key.encode()).digest()
            self._digests.append((digest, tenant))
            self._by_tenant[tenant] = digest

    def stream_token(self, tenant: str, job_id: str, expires: int) -> str:
        """A token that lets whoever holds it read job `job_id`'s events until `expires` (Unix time),
        and nothing else: for a browser's `EventSource`, which cannot send an Authorization header.
        Signed with the tenant's key digest, so every gateway with the same keys accepts it."""
        return f"{expires}.{self._mac(tenant, job_id, expires)}.{tenant}"

    def tenant_for_stream(self, token: str, job_id: str, now: float) -> str | None:
        """The tenant a `stream_token` for `job_id` speaks for, if it is genuine and not expired."""
        expires, _, rest = token.partition(".")
        mac, _, tenant = rest.partition(".")
        if not expires.isdigit() or int(expires) < now or tenant not in self._by_tenant:
            return None
        expected = self._mac(tenant, job_id, int(expires))
        return tenant if hmac.compare_digest(mac.encode(), expected.encode()) else None

    def _mac(self, tenant: str, job_id: str, expires: int) -> str:
        message = f"arkq-stream\x00{tenant}\x00{job_id}\x00{expires}".encode()
        return hmac.new(self._by_tenant[tenant], message, hashlib.sha256).hexdigest()[:40]

    def __bool__(self) -> bool:
        return bool(self._digests)

    def tenant_for(self, authorization: str | None) -> str | None:
        """The tenant whose key is in `Authorization: Bearer <key>`, or None."""
        if not self._digests:
            return ANONYMOUS
        scheme, _, key = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            return None
        presented = hashlib.sha256(key.strip().encode()).digest()
        found: str | None = None
        for digest, tenant in self._digests:  # every digest compared: the time does not say which matched
            if hmac.compare_digest(presented, digest):
                found = tenant
        return found


def is_loopback(host: str) -> bool:
    """Whether `host` is a loopback address (or `localhost`): the only place a keyless gateway serves."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def refuse_open_door(host: str, keys: Keys, *, insecure_no_auth: bool) -> None:
    """ConfigError for a gateway that would serve without keys on a non-loopback address."""
    if keys or insecure_no_auth or is_loopback(host):
        return
    raise ConfigError(
        f"gateway.host {host!r} is reachable from other machines, and gateway.api_keys is empty: anyone "
        'could run jobs. Set keys (ARK_GATEWAY__API_KEYS=\'{"alice": "sk-..."}\', or a '
        '"sha256:<hex>" digest of each key), listen on 127.0.0.1, or pass --insecure-no-auth'
    )
