"""The destination check reads hosts as the clients do and judges addresses by the IPv4 address they carry."""

import ipaddress

import pytest

from apps.core.addresses import address_allowed, embedded_ipv4
from apps.core.destinations import (
    CONNECTION,
    OUTBOUND,
    DestinationRefused,
    host_check,
    host_literal,
    socket_host_readings,
    url_check,
)

ip = ipaddress.ip_address


@pytest.mark.parametrize(
    "address, carried",
    [
        ("::ffff:127.0.0.1", ["127.0.0.1"]),  # IPv4-mapped, RFC 4291 2.5.5.2
        ("::127.0.0.1", ["127.0.0.1"]),  # IPv4-compatible, RFC 4291 2.5.5.1
        ("::ffff:0:7f00:1", ["127.0.0.1"]),  # SIIT IPv4-translated, RFC 6145
        ("2002:7f00:1::", ["127.0.0.1"]),  # 6to4, RFC 3056
        ("64:ff9b::7f00:1", ["127.0.0.1"]),  # NAT64 well-known prefix, RFC 6052
        ("64:ff9b:1:7f00:0:100::", ["127.0.0.1"]),  # local-use NAT64 (RFC 8215), its /48 reading first
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", ["65.54.227.120", "127.0.0.1"]),  # Teredo, RFC 4380
        ("::1", []),
        ("::", []),
        ("2606:4700::1111", []),
        ("127.0.0.1", []),
    ],
)
def test_ipv6_forms_carrying_an_ipv4_address(address, carried):
    assert [str(a) for a in embedded_ipv4(ip(address))][: len(carried)] == carried
    if not carried:
        assert embedded_ipv4(ip(address)) == []


def test_an_address_is_judged_by_what_it_carries():
    refused = OUTBOUND.refused
    for address in ("::127.0.0.1", "::ffff:0:7f00:1", "2002:7f00:1::", "64:ff9b::a00:1", "::ffff:10.0.0.1"):
        assert not address_allowed(address, refused=refused, allowed=[]), address
        assert address_allowed(address, refused=refused, allowed=["127.0.0.0/8", "10.0.0.0/8"]), address
    # A translation prefix in front of a public address reaches that public address (DNS64 networks).
    assert address_allowed("64:ff9b::808:808", refused=refused, allowed=[])
    assert address_allowed("2002:808:808::1", refused=refused, allowed=[])
    assert not address_allowed("::1", refused=refused, allowed=[])
    assert address_allowed("::1", refused=refused, allowed=["::1/128"])


@pytest.mark.parametrize(
    "host", ["127.1", "0x7f.1", "017700000001", "2130706433", "0177.0.0.1", "[::1]", "fe80::1%eth0"]
)
def test_every_spelling_the_socket_layer_takes_is_a_literal(host):
    assert host_literal(host) is not None


def test_names_are_not_literals():
    assert host_literal("example.com") is None and host_literal("1.example") is None


def test_bare_hosts_are_read_as_uts46_and_as_idna_2003():
    assert "127.0.0.1" in socket_host_readings("127\u30020\u30020\u30021")
    assert "127.0.0.1" in socket_host_readings("\uff11\uff12\uff17.0.0.1")  # full-width digits


@pytest.mark.parametrize(
    "url",
    [
        "http://127\u30020\u30020\u30021:8310/x",
        "http://127\uff0e0\uff0e0\uff0e1/",
        "http://127\uff610\uff610\uff611/",
        "http://[::127.0.0.1]/",
        "http://[::ffff:0:7f00:1]/",
        "http://[2002:7f00:1::]/",
        "http://[64:ff9b::7f00:1]/",
        "http://2130706433/",
        "http://LOCALHOST\u3002/",
    ],
)
def test_urls_are_judged_on_the_host_aiohttp_uses(settings, url):
    settings.ROWBELL_OUTBOUND_ALLOW = []
    if "LOCALHOST" in url:  # a name: judged on the addresses it resolves to, at connect
        assert url_check(url).raw_host == "localhost."
        return
    with pytest.raises(DestinationRefused, match="ROWBELL_OUTBOUND_ALLOW"):
        url_check(url)


def test_a_usual_public_url_passes_and_an_unusual_spelling_is_asked_for_in_its_usual_form(settings):
    assert url_check("https://hooks.example.com:8443/x").raw_host == "hooks.example.com"
    with pytest.raises(DestinationRefused, match="usual form"):
        url_check("http://0x8.8.8.8/")  # aiohttp refuses to connect to it


def test_a_customer_database_host_is_judged_like_any_destination(settings):
    settings.ROWBELL_CONNECTION_ALLOW = []
    for host in ("::ffff:127.0.0.1", "127\u30020\u30020\u30021", "2130706433", "[::127.0.0.1]"):
        with pytest.raises(DestinationRefused, match="ROWBELL_CONNECTION_ALLOW"):
            host_check(host, policy=CONNECTION)
    host_check("10.0.0.5", policy=CONNECTION)  # private networks hold customers' databases
    host_check("db.example.com", policy=CONNECTION)


# A trailing dot makes a name absolute (RFC 1034 section 3.1); before an address it changes nothing but the
# spelling, so the address is judged (and aiohttp, which takes such a host for a literal, never resolves it).
@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1./",
        "http://127.1./",
        "http://0x7f.1./",
        "http://2130706433./",
        "http://127.0.0.1../",
        "http://[::1.]/",
        "http://[::ffff:127.0.0.1.]/",
        "http://127\u30020\u30020\u30021\u3002/",
    ],
)
def test_a_trailing_dot_does_not_hide_an_address_in_a_url(settings, url):
    settings.ROWBELL_OUTBOUND_ALLOW = []
    with pytest.raises(DestinationRefused, match="loopback.*ROWBELL_OUTBOUND_ALLOW"):
        url_check(url)


@pytest.mark.parametrize(
    "url, address",
    [("http://8.8.8.8./", "8.8.8.8"), ("http://[2606:4700::1111.]/", "2606:4700::1111"), ("http://[::1.]/", "::1")],
)  # ::1 opened by the test settings
def test_an_allowed_address_with_a_trailing_dot_is_asked_for_in_its_usual_form(url, address):
    with pytest.raises(DestinationRefused, match=f"Write the IP address {address} in its usual form"):
        url_check(url)


@pytest.mark.parametrize("url", ["http://999.1/", "http://1..2/", "http://256.0.0.1/", "http://[::1::2]/"])
def test_a_host_aiohttp_takes_for_an_address_must_be_one(url):
    # aiohttp connects to such a host without the checked resolver: it would reach whatever DNS says.
    with pytest.raises(DestinationRefused):
        url_check(url)


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1.",
        "127.1.",
        "0x7f.1.",
        "2130706433.",
        "[::1]",
        "[::1].",
        "[::1.]",
        "::1.",
        "::ffff:127.0.0.1.",
        "127\u30020\u30020\u30021\u3002",
    ],
)
def test_a_trailing_dot_does_not_hide_an_address_in_a_bare_host(settings, host):
    settings.ROWBELL_OUTBOUND_ALLOW = settings.ROWBELL_CONNECTION_ALLOW = []
    for policy in (OUTBOUND, CONNECTION):
        with pytest.raises(DestinationRefused, match=f"loopback.*{policy.setting}"):
            host_check(host, policy=policy)


def test_a_trailing_dot_is_read_as_the_root():
    assert host_literal("127.0.0.1.") == ip("127.0.0.1") and host_literal("[::1].") == ip("::1")
    assert host_literal("example.com.") is None
    host_check("10.0.0.5.", policy=CONNECTION)
    with pytest.raises(DestinationRefused, match="private"):
        host_check("10.0.0.5.", policy=OUTBOUND)


# Special-use blocks: the IANA special-purpose registries (RFC 6890) and the RFCs named in apps.core.addresses.
SPECIAL_USE = [
    "192.88.99.1",
    "fec0::1",
    "2001:2::1",
    "2001:10::1",
    "2001:20::1",
    "2001:30::1",
    "3fff::1",
    "5f00::1",
    "100:0:0:1::1",
    "::ffff:192.88.99.1",
    "64:ff9b::c058:6301",
    "2002:c058:6301::1",
]


@pytest.mark.parametrize("address", SPECIAL_USE)
def test_special_use_addresses_are_not_reached_by_outbound_requests(settings, address):
    settings.ROWBELL_OUTBOUND_ALLOW = []
    assert not OUTBOUND.allows(address) and OUTBOUND.internal(address)
    with pytest.raises(DestinationRefused, match="ROWBELL_OUTBOUND_ALLOW"):
        url_check(f"http://[{address}]/" if ":" in address else f"http://{address}/")


def test_an_address_ipaddress_does_not_call_global_is_refused_even_outside_the_list(settings):
    settings.ROWBELL_OUTBOUND_ALLOW = []
    # 2001:5::/32 lies in the IETF protocol assignments (2001::/23, RFC 2928) and in no listed block.
    assert not ip("2001:5::1").is_global
    assert not OUTBOUND.allows("2001:5::1") and OUTBOUND.internal("2001:5::1")
    for public in ("8.8.8.8", "2606:4700::1111", "2620:4f:8000::1", "64:ff9b::808:808"):
        assert OUTBOUND.allows(public) and not OUTBOUND.internal(public), public


def test_the_allow_list_still_opens_special_use_networks(settings):
    settings.ROWBELL_OUTBOUND_ALLOW = ["192.88.99.0/24", "fec0::/10", "2001::/23", "3fff::/20", "5f00::/16", "100::/63"]
    for address in [*SPECIAL_USE, "2001:5::1"]:
        assert OUTBOUND.allows(address), address
        assert OUTBOUND.internal(address), address  # reached only because the operator opened it


def test_customer_databases_keep_their_own_policy(settings):
    settings.ROWBELL_CONNECTION_ALLOW = []
    for address in ("fec0::1", "2001:5::1", "192.88.99.1"):
        assert CONNECTION.allows(address), address
