"""tokenmill.spark_jobs.pii.PIIRedactor: e-mail, public IP and phone redaction (no Spark)."""

from __future__ import annotations

import pytest
from step_checks import assert_document_step, doc

from tokenmill.spark_jobs.pii import PIIRedactor


@pytest.fixture(scope="module")
def pii():
    return PIIRedactor()


def redact(pii, text):
    return pii.redact(text)[0]


def test_is_a_document_step_named_pii():
    assert_document_step(
        PIIRedactor(),
        "pii",
        email_placeholder="<EMAIL>",
        ip_placeholder="<IP_ADDRESS>",
        phone_placeholder="<PHONE_NUMBER>",
    )


@pytest.mark.parametrize(
    "address",
    [
        "john.doe@example.com",
        "JANE_DOE@sub.example.org",
        "first.last+news@mail.example.co.uk",
        "x-y%z@example-site.io",
        "info@xn--bcher-kva.example",
        "info@example.xn--p1ai",
        "a1@b2.museum",
    ],
)
def test_emails_are_redacted(pii, address):
    assert redact(pii, f"Write to {address}, please.") == "Write to <EMAIL>, please."
    assert redact(pii, f"<{address}>") == "<<EMAIL>>"


@pytest.mark.parametrize(
    ("text", "redacted"),
    [
        ("write to jane.doe@example.com_", "write to <EMAIL>_"),
        ("jane@example.org_foo", "<EMAIL>_foo"),
        ("(jane@example.org__) and x@xn--bcher-kva.example_", "(<EMAIL>__) and <EMAIL>_"),
        ("mailto:a@example.com_,b@example.org_;", "mailto:<EMAIL>_,<EMAIL>_;"),
    ],
)
def test_an_underscore_after_the_tld_ends_the_address(pii, text, redacted):
    assert redact(pii, text) == redacted


@pytest.mark.parametrize(
    "text",
    [
        "logo@2x.png and icon@3x.jpg",
        "logo@2x.png_small and icon@3x.jpg_",
        "a@b.com@c",
        "a@b.com_x@c",
        "a@b.com1 and a@b.com_1@c",
        "follow @tokenmill on social media",
        "user@localhost",
        "a@b.c",
        "price 10 @ 5.00 each",
        "foo@@example.com",
    ],
)
def test_non_emails_are_kept(pii, text):
    assert redact(pii, text) == text


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "93.184.216.34", "203.0.114.7", "151.101.1.69"])
def test_public_ipv4_is_redacted(pii, address):
    assert redact(pii, f"Connect to {address}.") == "Connect to <IP_ADDRESS>."
    assert redact(pii, f"http://{address}:8080/x") == "http://<IP_ADDRESS>:8080/x"


@pytest.mark.parametrize(
    "address",
    [
        "10.0.0.1",
        "172.16.4.4",
        "172.31.255.254",
        "192.168.1.20",  # private
        "127.0.0.1",
        "169.254.1.1",
        "0.0.0.0",
        "255.255.255.255",  # loopback, link-local, unspecified, broadcast
        "100.64.1.1",
        "192.0.2.1",
        "198.51.100.7",
        "203.0.113.9",  # shared (CGNAT), documentation
        "224.0.0.1",
        "240.1.2.3",  # multicast, reserved
    ],
)
def test_non_public_ipv4_is_kept(pii, address):
    assert redact(pii, f"host {address} here") == f"host {address} here"


@pytest.mark.parametrize(
    "text",
    [
        "Released version 2.0.0.1 today",
        "see v1.2.3.4 notes",
        "ver. 8.8.8.8",
        "Build 4.1.1.9 fixed it",
        "Mozilla/5.0 Chrome/120.0.0.0 Safari/537.36",
        "numbers 1.2.3 and 10.4.1",
        "01.02.03.04",
        "999.1.1.1",
        "1.2.3.4.5",
        "8.8.8.8.8",
        "section 3.1.4.1a",
    ],
)
def test_versions_and_non_addresses_are_kept(pii, text):
    assert redact(pii, text) == text


@pytest.mark.parametrize(
    "address",
    [
        "2001:4860:4860::8888",
        "2a00:1450:4001:82a::200e",
        "2606:4700:4700:0:0:0:0:1111",
        "2001:4860::",
    ],
)
def test_public_ipv6_is_redacted(pii, address):
    assert redact(pii, f"AAAA {address} ok") == "AAAA <IP_ADDRESS> ok"
    assert redact(pii, f"({address}).") == "(<IP_ADDRESS>)."


def test_ipv6_followed_by_a_colon(pii):
    assert redact(pii, "resolver 2001:4860:4860::8888: answered") == "resolver <IP_ADDRESS>: answered"


@pytest.mark.parametrize(
    "text",
    [
        "2001:db8::1",
        "fe80::1",
        "::1",
        "fc00::7",
        "ff02::1",
        "std::vector<int>",
        "at 12:30:45 sharp",
        "MAC 00:1A:2B:3C:4D:5E",
        "ratio 2024:10:5",
        "dead:beef::1",
    ],
)
def test_non_public_ipv6_and_lookalikes_are_kept(pii, text):
    assert redact(pii, text) == text


@pytest.mark.parametrize(
    "number",
    [
        "(415) 555-0132",
        "(415)555-0132",
        "415-555-0132",
        "415.555.0132",
        "555-555-5555",
        "(555) 555-5555",
        "1-800-555-0199",
        "+1 (415) 555-0132",
        "+1-415-555-0132",
        "+1 415 555 0132",
        "+14155550132",
        "+44 20 7946 0958",
        "+33 1 23 45 67 89",
        "+49 (0)30 1234567",
        "+86 138 0013 8000",
        "+91-98765-43210",
    ],
)
def test_phone_numbers_are_redacted(pii, number):
    assert redact(pii, f"Call {number} today.") == "Call <PHONE_NUMBER> today."
    assert redact(pii, f"Tel: {number}") == "Tel: <PHONE_NUMBER>"


@pytest.mark.parametrize(
    "text",
    [
        "In 1999 and 2005, and from 1999-2005",
        "born 2024-05-01",
        "on 05.12.2023 or 12/05/2023",
        "ISBN 978-0-306-40615-7",
        "ISBN 0-306-40615-2",
        "ISBN-13: 978-3-16-148410-0",
        "id 4155550132",
        "ref 123-456-7890",
        "415 555 0132",
        "price $1,234,567.89",
        "scores +20 30 40 50",
        "gain of +3",
        "SSN-like 123-45-6789",
        "card 4111-1111-1111-1111",
        "zip 94105-1234",
        "part 415-555-01325",
        "range 415-555-0132-7",
        "at 10:30-11:45",
        "+1 is the answer",
        "pi is 3.14159265358979",
    ],
)
def test_non_phone_numbers_are_kept(pii, text):
    assert redact(pii, text) == text


def test_counts_go_to_stats_and_nothing_is_dropped(pii):
    text = (
        "Mail a@example.com or b@example.org; servers 8.8.8.8, 10.0.0.1 and 2001:4860:4860::8888; "
        "call 415-555-0132 or +44 20 7946 0958 or (212) 555-0199."
    )
    d = doc(text, stats={"pii_email": 1, "other": 5})
    assert pii.process(d) is None
    assert d["text"] == (
        "Mail <EMAIL> or <EMAIL>; servers <IP_ADDRESS>, 10.0.0.1 and <IP_ADDRESS>; "
        "call <PHONE_NUMBER> or <PHONE_NUMBER> or <PHONE_NUMBER>."
    )
    assert d["stats"] == {"pii_email": 3, "pii_ipv4": 1, "pii_ipv6": 1, "pii_phone": 3, "other": 5}


def test_clean_text_is_untouched_and_counts_nothing(pii):
    text = "A perfectly ordinary paragraph about 3 cats, 12 dogs and the year 2024."
    d = doc(text)
    assert pii.process(d) is None
    assert d["text"] == text
    assert d["stats"] == {}


@pytest.mark.parametrize("text", [None, ""])
def test_missing_text_is_fine(pii, text):
    d = doc(text)
    assert pii.process(d) is None
    assert d["text"] == text


def test_each_kind_can_be_switched_off():
    text = "a@example.com 8.8.8.8 415-555-0132"
    assert PIIRedactor(email=False).redact(text)[0] == "a@example.com <IP_ADDRESS> <PHONE_NUMBER>"
    assert PIIRedactor(ip=False).redact(text)[0] == "<EMAIL> 8.8.8.8 <PHONE_NUMBER>"
    assert PIIRedactor(phone=False).redact(text)[0] == "<EMAIL> <IP_ADDRESS> 415-555-0132"


def test_custom_placeholders():
    step = PIIRedactor(email_placeholder="[email]", ip_placeholder="[ip]", phone_placeholder="[phone]")
    assert step.redact("a@example.com 8.8.8.8 415-555-0132")[0] == "[email] [ip] [phone]"


def test_email_with_digits_is_not_also_a_phone_or_ip(pii):
    text, counts = pii.redact("Contact 4155550132@sms.example.com or admin@8.8.8.8.example.net now")
    assert text == "Contact <EMAIL> or <EMAIL> now"
    assert counts == {"pii_email": 2}


def test_trailing_numbers_after_an_international_number_are_given_back(pii):
    assert redact(pii, "Call +44 20 7946 0958 2019 edition") == "Call <PHONE_NUMBER> 2019 edition"
    assert redact(pii, "Call +1 415 555 0132 1999") == "Call <PHONE_NUMBER> 1999"


def test_e_mails_in_long_tokens_and_several_per_token(pii):
    text = "x" * 5000 + " mailto:a@example.com,b@example.org;" + "y" * 5000
    assert pii.redact(text) == ("x" * 5000 + " mailto:<EMAIL>,<EMAIL>;" + "y" * 5000, {"pii_email": 2})


@pytest.mark.parametrize(
    "text",
    [
        "+" + "1" * 20_000 + "x",
        "+1 " + "2 " * 20_000 + "x",
        "a" * 50_000 + "@" + "b-" * 25_000,
        "2001:" * 20_000,
        "1." * 50_000,
        "(415) " * 20_000,
        "a@b.cc " * 20_000,
        "a@b.cc_" * 20_000,
        "a@b.cc_" + "x" * 100_000 + "@b.cc",
        "x\t" * 50_000 + "@" * 50_000,
    ],
)
def test_pathological_input_is_fast(pii, text):
    import time

    start = time.process_time()
    pii.redact(text)
    assert time.process_time() - start < 1.0
