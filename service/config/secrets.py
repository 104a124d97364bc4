"""Which configuration values are secrets, so that they never reach a log or a dump.

librdkafka properties carry the credentials of SASL and SSL clusters
(``sasl.password``, ``ssl.key.password``, ``ssl.key.pem``, OAuth client
secrets…). They are recognised by name; the values found under those names are
what the log redactor looks for in every line. Of the service's own keys,
``http.sessions_token`` is a secret.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from service.config.schema import Config

REDACTED = "<redacted>"

# Property names are matched on these words rather than listed one by one, so a
# property librdkafka adds later (sasl.oauthbearer.assertion.private.key.passphrase…)
# is treated as secret too.
_SECRET_WORDS = ("password", "secret", "passphrase", "private")
_SECRET_NAMES = frozenset(
    {
        "ssl.key.pem",  # the private key itself
        "ssl_key",  # confluent-kafka's in-memory key
        "sasl.oauthbearer.config",  # free-form, often holds a client secret
        "sasl.jaas.config",  # Java clients' spelling, in case it is pasted in
        "sessions_token",  # [http] sessions_token: what /sessions queries present
        "basic.auth.user.info",  # [schema_registry]: "user:password"
        "bearer.auth.token",  # [schema_registry]: a static bearer token
    }
)


def is_secret(name: str) -> bool:
    """Whether a property or log field called ``name`` holds a credential."""
    lowered = name.lower()
    return lowered in _SECRET_NAMES or any(word in lowered for word in _SECRET_WORDS)


def redact_properties(properties: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``properties`` with every secret value replaced."""
    return {k: (REDACTED if is_secret(k) else v) for k, v in properties.items()}


def secret_values(config: Config) -> list[str]:
    """Every secret value in ``config``, longest first (so no secret is half-replaced)."""
    values = set()
    for table in (config.kafka, config.consumer, config.producer):
        for name, value in table.items():
            if is_secret(name) and value:
                values.add(value)
    if config.http.sessions_token:
        values.add(config.http.sessions_token)
    registry = config.schema_registry
    if registry is not None:
        for name, prop in registry.properties.items():
            text = str(prop)
            if is_secret(name) and text:
                values.add(text)
                if name == "basic.auth.user.info" and ":" in text:
                    values.add(text.split(":", 1)[1])  # the password alone, as a URL would show it
        for url in registry.url.split(","):
            password = urlsplit(url.strip()).password
            if password:
                values.add(password)
    return sorted(values, key=len, reverse=True)


def redact_url(url: str) -> str:
    """``url`` (or a comma list of them) with the password of any ``user:password@`` replaced."""
    out = []
    for one in url.split(","):
        parts = urlsplit(one.strip())
        if parts.password:
            netloc = parts.netloc.replace(f":{parts.password}@", f":{REDACTED}@", 1)
            one = parts._replace(netloc=netloc).geturl()
        out.append(one.strip())
    return ",".join(out)


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with each occurrence of a secret value replaced."""
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text
