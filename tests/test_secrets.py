"""Secrets and personal data stay where they belong: error texts are redacted wherever they are kept, a deletion
scrubs the sync log, each data folder has its own private key, and nothing defaults to localhost or to a key
nobody chose outside the local launchers."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import unicodedata
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import duckdb
import phonenumbers
import pytest
from dagster import DagsterEventType, build_run_status_sensor_context
from hypothesis import given, settings
from hypothesis import strategies as st

from cdp_assets import stack
from cdp_assets.privacy import erasure, inbox, subject
from cdp_assets.privacy.erasure import SCRUBBED
from cdp_assets.privacy.redact import EMAIL_MASK, PHONE_MASK, redacted
from cdp_assets.privacy.subject import Identifier
from resources import PRIVACY_KEY, SANDBOX_URL, SettingsMissing, build_resources, privacy_folders
from schedules.alerts import run_failure_alerts
from tests.conftest import Env, stand_in
from tests.test_alerts import alerts
from tests.test_privacy import process

ROOT = Path(__file__).resolve().parents[1]
BASE_URLS = ("STRIPE_BASE_URL", "HUBSPOT_BASE_URL", "ZENDESK_BASE_URL", "KLAVIYO_BASE_URL", "MIXPANEL_BASE_URL",
             "BRAZE_BASE_URL", "META_BASE_URL")  # fmt: skip

# --- the redactor, over the forms an error text carries a person in -------------------------------------------

EMAIL = "jane.o'neil+crm@acme-corp.io"
ECHOED_EMAILS = {
    "plain": EMAIL,
    "percent-encoded in a query": quote(EMAIL, safe=""),
    "double-encoded": quote(quote(EMAIL, safe=""), safe=""),
    "JSON-escaped": json.dumps(EMAIL).replace("@", "\\u0040"),
    "HTML entity": EMAIL.replace("@", "&#64;"),
    "fullwidth at": EMAIL.replace("@", "\uff20"),
    "Unicode (NFC)": "josé.müller@bücher.de",
    "Unicode (NFD)": "jose\u0301.mu\u0308ller@bu\u0308cher.de",
    "punycode": "jose@xn--bcher-kva.de",
    "quoted local part": '"jane doe"@acme-corp.io',
    "in angle brackets": "Jane Doe <jane@acme-corp.io>",
    "Python repr": repr({"email": EMAIL}),
}
PHONES = {
    "E.164": "+14155550199",
    "international": "+1 (415) 555-0199",
    "US national": "(415) 555-0199",
    "US dashes": "415-555-0199",
    "US dots": "415.555.0199",
    "UK national": "020 7946 0958",
    "UK international": "+44 20 7946 0958",
    "French": "06 12 34 56 78",
    "percent-encoded plus": "%2B14155550199",
    "with an extension": "+1 415-555-0199 ext. 12",
}
KEPT = [  # what finds the failing call or row, and names no one
    "hubspot: POST http://127.0.0.1:8765/crm/v3/objects/contacts/batch/upsert answered 503",
    "customer cus_NffrFeUfNV2Hib, contact 51234567890, user 4155550199, profile p_3f2a9c, at 1780000000",
    "run 123e4567-e89b-12d3-a456-426614174000 started 2024-01-05T12:30:00Z (05/01/2024 12:30:00)",
    "2 of 1,234 rows refused: cdp_mrr 12345.67 is not a number; property cdp_plan; v1.13.2; 192.168.100.200",
    'Property values were not valid: [{"name": "cdp_subscription_status", "error": "INVALID_OPTION"}]',
    "sms campaign refused; contact 51234567890 updated at 1780000000",  # a phone word names nothing past its clause
]


def in_a_reply(identifier: str, line: int) -> str:
    """An error text of several lines, as a destination's reply comes back, with `identifier` on line `line`."""
    lines = ["ServiceError: braze: POST https://rest.iad-01.braze.com/users/track answered 400:",
             '{"message": "Invalid request",', '"errors": [{"type": "refused", "index": 3}],',
             '"detail": "record ' + identifier + ' was refused"}']  # fmt: skip
    lines.insert(line, f"  input: {identifier}")
    return "\n".join(lines)


@pytest.mark.parametrize("form", ECHOED_EMAILS)
@pytest.mark.parametrize("line", [0, 2, 4])
def test_an_email_in_any_form_on_any_line_is_masked(form: str, line: int) -> None:
    echoed = ECHOED_EMAILS[form]
    out = redacted(in_a_reply(echoed, line), limit=2000)
    assert echoed not in out and EMAIL_MASK in out, out
    for part in ("neil", "acme-corp", "bücher", "bu\u0308cher", "xn--bcher", "jane doe", "müller"):
        assert part not in out, out
    assert "\n" not in out and "braze.com/users/track answered 400" in out  # one line; the call stays readable


@pytest.mark.parametrize("form", PHONES)
def test_a_phone_in_any_format_is_masked(form: str) -> None:
    phone = PHONES[form]
    out = redacted(in_a_reply(phone, 1), limit=2000)
    assert PHONE_MASK in out and "555" not in out and "7946" not in out and "34 56" not in out, out


@pytest.mark.parametrize("labelled", ['"phone": "4155550199"', "mobile=4155550199", "'sms_number': '0612345678'"])
def test_bare_digits_are_masked_when_labelled_as_a_phone(labelled: str) -> None:
    out = redacted(f"refused: {{{labelled}}}")
    assert PHONE_MASK in out and "5550199" not in out and "12345678" not in out, out


@pytest.mark.parametrize("text", ["Phone number 4155550199 is invalid", "SMS to 4155550199 failed",
                                  "mobile No. 0612345678 refused", '{"mobilePhone": 4155550199}',
                                  "WhatsApp number for the contact 4155550199 is not registered"])  # fmt: skip
def test_bare_digits_a_phone_word_names_in_prose_are_masked(text: str) -> None:
    out = redacted(text)
    assert PHONE_MASK in out and "5550199" not in out and "12345678" not in out, out


def test_names_addresses_and_credentials_labelled_in_a_reply_are_masked() -> None:
    reply = ('{"firstname": "Jane", "last_name": "O\'Neil", "zip": "94103", "ip": "203.0.113.7", '
             '"name": "email", "access_token": "EAAGm0PX4ZCps"}\nAuthorization: Bearer pat-na1-11aa-22bb '
             "key sk_live_51HxyzABC and api_key=abc123def")  # fmt: skip
    out = redacted(reply, limit=2000)
    for secret in ("Jane", "O'Neil", "94103", "203.0.113.7", "EAAGm0PX4ZCps", "pat-na1", "sk_live_51", "abc123def"):
        assert secret not in out, (secret, out)
    assert '"name": "email"' in out  # the field a destination complains about stays


@pytest.mark.parametrize("text", KEPT)
def test_ids_dates_hosts_and_counts_needed_to_debug_are_kept(text: str) -> None:
    assert redacted(text, limit=2000) == text


def test_the_cut_comes_after_masking_so_no_part_of_an_address_is_left() -> None:
    out = redacted("x" * 230 + f" {EMAIL} and more", limit=240)
    assert len(out) == 240 and "jane" not in out and "acme" not in out


LETTERS = st.sampled_from("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789éüßçøñ中文жш")
LOCAL = st.lists(st.text(LETTERS, min_size=1, max_size=12), min_size=1, max_size=3).map(".".join).flatmap(
    lambda base: st.sampled_from(["", "+crm", "_x", "-1", "'s"]).map(lambda tail: base + tail))  # fmt: skip
DOMAIN = st.tuples(st.text(LETTERS, min_size=1, max_size=15), st.sampled_from(["io", "com", "de", "co.uk", "中国"]))
ENCODINGS: dict[str, Callable[[str], str]] = {
    "plain": lambda e: e, "percent": lambda e: quote(e, safe=""), "json": lambda e: json.dumps(e)[1:-1],
    "json-ascii": lambda e: json.dumps(e).replace("@", "\\u0040")[1:-1], "upper": str.upper,
    "nfd": lambda e: unicodedata.normalize("NFD", e),
}  # fmt: skip
REGIONS = ["US", "GB", "FR", "DE", "IN", "BR", "JP", "AU"]
FORMATS = [phonenumbers.PhoneNumberFormat.E164, phonenumbers.PhoneNumberFormat.INTERNATIONAL,
           phonenumbers.PhoneNumberFormat.NATIONAL]  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(local=LOCAL, domain=DOMAIN, encoding=st.sampled_from(sorted(ENCODINGS)), line=st.integers(0, 4))
def test_generated_addresses_never_survive(local: str, domain: tuple[str, str], encoding: str, line: int) -> None:
    address = ENCODINGS[encoding](f"{local}@{domain[0]}.{domain[1]}")
    out = redacted(in_a_reply(address, line), limit=4000)
    assert out.count(EMAIL_MASK) == 2 and unicodedata.normalize("NFKC", address) not in out, (address, out)


@settings(max_examples=150, deadline=None)
@given(region=st.sampled_from(REGIONS), kind=st.sampled_from(["MOBILE", "FIXED_LINE"]),
       layout=st.sampled_from(FORMATS), line=st.integers(0, 4))  # fmt: skip
def test_generated_phones_never_survive(region: str, kind: str, layout: int, line: int) -> None:
    number = phonenumbers.example_number_for_type(region, getattr(phonenumbers.PhoneNumberType, kind))
    written = phonenumbers.format_number(number, layout)
    out = redacted(in_a_reply(written, line), limit=4000)
    national = str(number.national_number)
    assert out.count(PHONE_MASK) == 2 and national[-6:] not in "".join(ch for ch in out if ch.isdigit()), (written, out)


# --- through the pipeline: a destination echoing people -------------------------------------------------------


@pytest.fixture
def echoing() -> Iterator[tuple[str, list[Any]]]:
    """A destination that refuses every call and echoes what it was sent, as many APIs' validation errors do: its
    base URL, and the bodies it received."""
    received: list[Any] = []

    def answer(method: str, body: Any) -> tuple[int, Any]:
        received.append(body)
        return 422, {"message": "The request could not be processed", "input": body}

    with stand_in(answer) as url:
        yield url, received


def sent_people(received: list[dict[str, Any]]) -> tuple[set[str], set[str], set[str]]:
    """(emails, names, external ids) of every Braze attribute object the destination was sent."""
    objects = [obj for body in received for obj in body.get("attributes", [])]
    emails = {obj["email"] for obj in objects if obj.get("email")}
    names = {obj[k] for obj in objects for k in ("first_name", "last_name") if obj.get(k) and len(obj[k]) > 2}
    return emails, names, {obj["external_id"] for obj in objects}


def test_a_sync_failure_echoing_people_keeps_no_identifier_and_a_deletion_scrubs_what_names_them(
    start: Callable[..., Env], echoing: tuple[str, list[Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = start()
    url, received = echoing
    monkeypatch.setenv("BRAZE_BASE_URL", url)
    outcome = env.sync("braze_users", raise_on_error=False)
    assert not outcome.success
    emails, names, external_ids = sent_people(received)
    assert emails and names

    def leaked(text: str) -> list[str]:
        return [value for value in emails | {f'"{name}"' for name in names} if value in text]

    [(status, message)] = env.pipeline.query("SELECT status, message FROM sync.runs WHERE sync = 'braze_users'")
    assert status == "failed" and "answered 422" in message and EMAIL_MASK in message, message
    assert leaked(message) == []
    instance = env.pipeline.instance
    [failure] = instance.all_logs(outcome.run_id, of_type=DagsterEventType.STEP_FAILURE)
    metadata = failure.dagster_event.step_failure_data.user_failure_data.metadata
    assert metadata["status"].value == "failed" and EMAIL_MASK in metadata["message"].value
    assert leaked("\n".join(repr(record) for record in instance.all_logs(outcome.run_id))) == []  # Dagster's log

    monkeypatch.delenv("CDP_ALERT_WEBHOOK_URL", raising=False)
    monkeypatch.setenv("CDP_ALERTS_DB", str(tmp_path / "alerts.duckdb"))
    [run_failure] = instance.all_logs(outcome.run_id, of_type=DagsterEventType.RUN_FAILURE)
    run_failure_alerts(build_run_status_sensor_context(
        sensor_name="run_failure_alerts", dagster_event=run_failure.dagster_event, dagster_instance=instance,
        dagster_run=instance.get_run_by_id(outcome.run_id),
    ).for_run_failure())  # fmt: skip
    [alert] = alerts(tmp_path / "alerts.duckdb")
    assert "sync__braze_users" in alert["summary"] and leaked(json.dumps(alert, default=str)) == []

    # The message still holds a profile id (redaction keeps ids); deleting that person scrubs it.
    [named] = [profile for profile in external_ids if profile in message][:1]
    [(email,)] = env.pipeline.query("SELECT email FROM views.marketing_contacts WHERE profile_id = $p", {"p": named})
    monkeypatch.delenv("BRAZE_BASE_URL")
    monkeypatch.setenv("CDP_WAREHOUSE", str(env.pipeline.warehouse))
    inbox.file_request(privacy_folders()[0], "deletion", [Identifier("email", email)], "test")
    assert process(env)
    assert env.pipeline.query("SELECT status, message FROM sync.runs WHERE sync = 'braze_users'") == [
        ("failed", SCRUBBED)]  # fmt: skip


def test_the_sync_log_scrub_matches_whole_tokens_and_a_phones_bare_digits() -> None:
    named = {1: "contact 4155550199 refused", 2: "user 14155550199: 400", 3: "profile p_3f2a9c refused",
             4: "zendesk user 4242 was refused", 5: "to +14155550199 failed"}  # fmt: skip
    kept = {6: "contact 142420 and 24155550199 refused at 1780004242", 7: "profile p_3f2a9c0 refused",
            8: "2 of 4242042 rows refused"}  # fmt: skip
    with duckdb.connect() as conn:
        conn.execute(subject.SETUP_SQL)
        conn.execute("INSERT INTO _subject_values VALUES ('phone', '+14155550199'), ('user_id', '4242')")
        conn.execute("INSERT INTO _subject_profiles VALUES ('p_3f2a9c')")
        conn.execute("CREATE SCHEMA sync; CREATE TABLE sync.runs (run INTEGER, message VARCHAR)")
        conn.executemany("INSERT INTO sync.runs VALUES (?, ?)", [*named.items(), *kept.items()])
        assert erasure.erase(conn) == {"sync.runs": len(named)}
        after = dict(conn.execute("SELECT run, message FROM sync.runs").fetchall())
    assert after == {**dict.fromkeys(named, SCRUBBED), **kept}


def test_a_destination_refusing_rows_by_echoing_their_address_keeps_only_masked_reasons(
    start: Callable[..., Env],
) -> None:
    env = start()
    with duckdb.connect(str(env.pipeline.warehouse)) as conn:  # addresses Braze refuses: no dot
        bad = [email for (email,) in conn.execute(
            "UPDATE views.marketing_contacts SET email = replace(email, '.', '-') WHERE email LIKE '%@%.%' AND "
            "profile_id IN (SELECT profile_id FROM privacy.consent WHERE purpose = 'email_marketing' AND allowed "
            "ORDER BY profile_id LIMIT 5) RETURNING email").fetchall()]  # fmt: skip
    assert bad
    outcome = env.sync("braze_users")
    reasons = [reason for (reason,) in env.pipeline.query("SELECT reason FROM sync.rejections")]
    assert outcome.metadata["sync/braze_users"]["rejected"] > 0 and reasons
    assert all("is not a valid email address" in reason and EMAIL_MASK in reason for reason in reasons), reasons
    assert not [email for email in bad if any(email in reason for reason in reasons)]


# --- the privacy key and the base URLs ------------------------------------------------------------------------


def test_each_data_folder_gets_its_own_private_key_reused_on_later_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert PRIVACY_KEY not in stack.sandbox_credentials()  # no public default
    monkeypatch.delenv(PRIVACY_KEY)
    first = stack.launcher_environment(tmp_path / "a")[PRIVACY_KEY]
    key_file = tmp_path / "a" / "privacy.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600 and len(first) >= 64
    assert stack.launcher_environment(tmp_path / "a")[PRIVACY_KEY] == first  # reused
    assert stack.launcher_environment(tmp_path / "b")[PRIVACY_KEY] != first  # another folder, another key
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["privacy.key"]  # no draft left behind

    monkeypatch.setenv(PRIVACY_KEY, "a-key-of-my-own")  # the environment's key wins, and no file is made
    assert stack.launcher_environment(tmp_path / "c")[PRIVACY_KEY] == "a-key-of-my-own"
    assert not (tmp_path / "c").exists()

    key_file.chmod(0o644)
    with pytest.raises(SystemExit, match="chmod 600"):
        stack.privacy_key(tmp_path / "a")


def test_cdp_env_hands_the_shell_the_folders_key_without_printing_it(tmp_path: Path) -> None:
    bare = {"HOME": os.environ.get("HOME", "/root"), "PATH": "/usr/bin:/bin"}
    cdp = f"{Path(sys.executable).parent}/cdp env --data {tmp_path}"
    shell = subprocess.run(["bash", "-c", f'eval "$({cdp})" && printf %s "$CDP_PRIVACY_SALT"'], env=bare,
                           capture_output=True, text=True, timeout=120)  # fmt: skip
    key = (tmp_path / "privacy.key").read_text().strip()
    assert shell.returncode == 0 and shell.stdout == key, shell.stderr
    exports = subprocess.run(cdp.split(), env=bare, capture_output=True, text=True, check=True).stdout
    assert key not in exports and f"CDP_PRIVACY_SALT=\"$(cat {tmp_path / 'privacy.key'})\"" in exports


def test_definitions_without_a_privacy_key_fail_to_load_saying_what_it_is_for() -> None:
    environment = {name: value for name, value in os.environ.items() if name != PRIVACY_KEY}
    result = subprocess.run([str(Path(sys.executable).parent / "dagster"), "definitions", "validate", "-m",
                             "cdp_assets.definitions"], cwd=ROOT, env=environment, capture_output=True, text=True,
                            timeout=300)  # fmt: skip
    said = result.stdout + result.stderr
    assert result.returncode != 0 and "not set: CDP_PRIVACY_SALT." in said and "suppression digests" in said, said


def test_without_the_sandbox_every_missing_base_url_and_secret_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SANDBOX_URL)
    for name in (*BASE_URLS, "BRAZE_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("STRIPE_BASE_URL", "https://api.stripe.com")
    with pytest.raises(SettingsMissing) as raised:
        build_resources()
    problem = str(raised.value)
    assert problem.startswith("not set: ") and "STRIPE_BASE_URL" not in problem
    assert all(name in problem for name in (*BASE_URLS[1:], "BRAZE_API_KEY")) and "127.0.0.1" not in problem

    for name in BASE_URLS:  # every base URL given: only the secret is missing
        monkeypatch.setenv(name, f"https://{name.lower()}.example")
    with pytest.raises(SettingsMissing, match=r"^not set: BRAZE_API_KEY\."):
        build_resources()
    monkeypatch.setenv("BRAZE_API_KEY", "braze-real")
    resources = build_resources()
    assert resources["stripe"].base_url == "https://stripe_base_url.example"  # type: ignore[attr-defined]
