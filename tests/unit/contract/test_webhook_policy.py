"""Which webhook destinations a gateway accepts: a laptop's, and a shared one's."""

from __future__ import annotations

import ipaddress

import pytest

from asyncnb.contract.webhook_policy import WebhookPolicy, embedded_ipv4, is_internal

SHARED = WebhookPolicy(allow_internal=False)
LAPTOP = WebhookPolicy()

INTERNAL = [
    "http://127.0.0.1/h",
    "http://2130706433/h",
    "http://0x7f000001/h",
    "http://127.1/h",
    "http://[::ffff:127.0.0.1]/h",
    "http://localhost/h",
    "http://LOCALHOST./h",
    "http://user:pw@127.0.0.1/h",
    "http://[64:ff9b::7f00:1]/h",
    "http://[2002:7f00:1::]/h",
    "http://[::127.0.0.1]/h",
    "http://[::1]/h",
    "http://10.0.0.1/h",
    "http://172.16.0.1/h",
    "http://192.168.1.1/h",
    "http://100.64.0.1/h",
    "http://[fd00::1]/h",
    "http://api.localhost/h",
    "http://0177.0.0.1/h",
]


@pytest.mark.parametrize("url", INTERNAL)
def test_a_shared_gateway_denies_its_own_network_in_every_spelling(url: str) -> None:
    assert SHARED.problem(url) is not None


@pytest.mark.parametrize("url", INTERNAL)
def test_a_loopback_gateway_may_call_its_own_machine(url: str) -> None:
    assert LAPTOP.problem(url) is None


@pytest.mark.parametrize(
    "url", ["https://example.com/h", "http://93.184.216.34:8080/h", "https://[2606:4700::1]/h"]
)
def test_public_destinations_pass_both(url: str) -> None:
    assert SHARED.problem(url) is None and LAPTOP.problem(url) is None


@pytest.mark.parametrize(
    "url", ["http://169.254.169.254/latest", "http://[fe80::1]/h", "http://metadata/h"]
)
def test_metadata_and_link_local_are_denied_everywhere(url: str) -> None:
    assert SHARED.problem(url) is not None and LAPTOP.problem(url) is not None


def test_webhook_allow_opens_what_it_names_and_nothing_else() -> None:
    policy = WebhookPolicy(allow=("127.0.0.1/32", "hooks.internal"), allow_internal=False)
    assert policy.problem("http://127.0.0.1:9000/h") is None
    assert policy.problem("http://10.0.0.1/h") is not None
    # a name allowed explicitly may resolve to an internal address
    assert policy.resolved_problem("hooks.internal", ["10.1.2.3"]) is None
    assert policy.resolved_problem("other.example", ["10.1.2.3"]) is not None


def test_a_name_that_resolves_inside_is_refused_at_delivery() -> None:
    assert SHARED.resolved_problem("rebind.example", ["93.184.216.34", "127.0.0.1"])
    assert SHARED.resolved_problem("v6.example", ["::ffff:10.0.0.1"])
    assert SHARED.resolved_problem("public.example", ["93.184.216.34"]) is None


@pytest.mark.parametrize(
    ("text", "inner"),
    [
        ("::ffff:10.0.0.1", "10.0.0.1"),
        ("2002:0a00:0001::", "10.0.0.1"),
        ("64:ff9b::a00:1", "10.0.0.1"),
        ("::10.0.0.1", "10.0.0.1"),
        ("2001:0:4136:e378:8000:63bf:f5ff:fffe", "10.0.0.1"),  # Teredo
        ("2606:4700::1", None),
    ],
)
def test_ipv4_carried_in_ipv6(text: str, inner: str | None) -> None:
    found = embedded_ipv4(ipaddress.IPv6Address(text))
    assert (str(found) if found else None) == inner


def test_internal_covers_loopback_private_shared_and_reserved() -> None:
    for text in ("127.0.0.1", "10.0.0.1", "100.64.0.1", "192.0.2.1", "240.0.0.1", "fc00::1"):
        assert is_internal(ipaddress.ip_address(text)), text
    assert not is_internal(ipaddress.ip_address("93.184.216.34"))
