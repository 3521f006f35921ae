"""Which webhook URLs and addresses docjobs accepts (docjobs/webhooks.py), and the gateway's settings for them."""

from __future__ import annotations

import ipaddress

import pytest

from docjobs import webhooks
from docjobs.settings import SettingsError
from gateway.settings import Settings


@pytest.mark.parametrize("address", [
    "127.0.0.1", "10.0.0.1", "172.16.5.4", "192.168.1.1", "169.254.169.254", "0.0.0.0", "100.64.0.1",
    "224.0.0.251", "255.255.255.255", "::1", "::", "fe80::1", "fd00::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1",
    "ff02::1", "192.0.2.1", "198.18.0.1",
])
def test_non_public_addresses_are_refused(address: str) -> None:
    assert not webhooks.public(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", [
    "::7f00:1", "::a00:1",  # IPv4-compatible (deprecated): ::127.0.0.1, ::10.0.0.1
    "::ffff:0:7f00:1",  # IPv4-translated (SIIT) 127.0.0.1
    "64:ff9b::7f00:1", "64:ff9b::a9fe:a9fe",  # NAT64 of 127.0.0.1 and 169.254.169.254
    "64:ff9b:1::a00:1",  # the local-use NAT64 prefix
    "2002:7f00:1::1", "2002:a9fe:a9fe::1",  # 6to4 of 127.0.0.1 and 169.254.169.254
    "fec0::1",  # site-local (deprecated, still routed inside some networks)
])
def test_ipv6_forms_carrying_a_private_address_are_refused(address: str) -> None:
    assert not webhooks.public(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["93.184.215.14", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8",
                                     "64:ff9b::808:808", "2002:808:808::1"])
def test_public_addresses_pass(address: str) -> None:
    assert webhooks.public(ipaddress.ip_address(address))


@pytest.mark.parametrize(("url", "problem"), [
    ("ftp://example.com/", "http or https"), ("example.com/hook", "http or https"), ("http:///hook", "host"),
    ("https://user:pw@example.com/", "credentials"), ("https://example.com/#x", "fragment"),
    ("https://example.com/a b", "spaces"), ("https://example.com:99999/", "not a valid URL"),
    ("https://example.com/" + "a" * 2000, "longer"),
])
def test_malformed_urls_are_refused_with_a_reason(url: str, problem: str) -> None:
    with pytest.raises(webhooks.WebhookUrlError, match=problem):
        webhooks.parse_url(url)


def test_the_allow_list_names_hosts_and_ports() -> None:
    allow = webhooks.parse_allow(" hooks.internal , 127.0.0.1:8081,[::1]:9000, Example.COM. ")
    assert allow == (("hooks.internal", None), ("127.0.0.1", 8081), ("::1", 9000), ("example.com", None))
    assert webhooks.check_target(webhooks.parse_url("https://hooks.internal:4443/x"), allow)
    assert webhooks.check_target(webhooks.parse_url("http://[::1]:9000/"), allow)
    with pytest.raises(webhooks.WebhookUrlError, match="allow list"):
        webhooks.check_target(webhooks.parse_url("http://127.0.0.1:8082/"), allow)
    # Without a list nothing is listed: every address is checked.
    assert not webhooks.check_target(webhooks.parse_url("https://example.com/"), ())
    with pytest.raises(ValueError):
        webhooks.parse_allow("http://example.com/path")


@pytest.mark.parametrize(("value", "problem"), [
    ("c2VjcmV0", "whsec_"), ("whsec_!!!", "base64"), ("whsec_c2hvcnQ=", "24 to 64 bytes"),
])
def test_the_secret_must_be_a_standard_webhooks_secret(value: str, problem: str) -> None:
    env = {"DOCJOBS_AUTH": "none", "DOCJOBS_GRPC_TOKEN": "g" * 32, "DOCJOBS_WEBHOOK_SECRET": value}
    with pytest.raises(SettingsError, match=problem):
        Settings.from_env(env)


def test_webhook_settings_are_read() -> None:
    env = {"DOCJOBS_AUTH": "none", "DOCJOBS_GRPC_TOKEN": "g" * 32, "DOCJOBS_WEBHOOK_SECRET": "whsec_" + "A" * 32,
           "DOCJOBS_WEBHOOK_ALLOW": "hooks.internal:8080", "DOCJOBS_WEBHOOK_MAX_AGE_S": "600"}
    settings = Settings.from_env(env)
    assert settings.webhook_allow == (("hooks.internal", 8080),) and settings.webhook_max_age_s == 600
    assert "whsec" not in repr(settings)


def test_international_hosts_are_named_as_the_sender_connects_to_them() -> None:
    """The sender's HTTP client asks its resolver for the ASCII (IDNA) form of a host: a listed host and
    a URL's host are compared in that form, or a listed international host would pass at POST and be
    refused at every send."""
    allow = webhooks.parse_allow("bücher.example, hooks.internal")
    assert allow == (("xn--bcher-kva.example", None), ("hooks.internal", None))
    target = webhooks.parse_url("https://Bücher.example/hook")
    assert target.host == "xn--bcher-kva.example" and webhooks.check_target(target, allow)
    # As yarl reads it, fullwidth letters name the ASCII host: the host checked is the one connected to.
    assert webhooks.parse_url("http://\uff48\uff4f\uff4f\uff4b\uff53.internal/").host == "hooks.internal"
    with pytest.raises(webhooks.WebhookUrlError, match="host"):
        webhooks.parse_url("http://a\u200db.example/")
