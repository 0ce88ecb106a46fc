"""The data plan: one pandera contract per staging entity, all in one place.

A row that breaks any rule goes to `quarantine.<entity>` with the rules it broke and
the values that broke them; every other row goes on to staging. Allowed values live in
module constants read when a check runs, so a contract fix is a one-line change here
followed by re-materialising staging, which replays history from raw.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import pandera.pandas as pa
import phonenumbers
from pandera import extensions
from pandera.typing import Series

CLOCK_SKEW = timedelta(minutes=5)  # how far in the future a source's clock may run
# The times a record may carry, a product rule: no customer record of a SaaS tool predates the unix epoch (whose
# first instant is the usual "unset" value), and a time from 2100 on is a sentinel ("never", 9999-12-31) or a wrong
# unit. Staging reads no time outside it (the field goes to quarantine, named), landing times no version by it.
PLAUSIBLE_SINCE = datetime(1970, 1, 1, tzinfo=UTC)  # exclusive
PLAUSIBLE_UNTIL = datetime(2100, 1, 1, tzinfo=UTC)  # exclusive
MAX_ID = 2**63 - 1  # Zendesk and HubSpot ids are signed 64-bit integers (their API references)
# C0 and C1 control characters other than tab, line feed and carriage return (whitespace, judged where it matters):
# a NUL or an escape sequence in a text is corruption, and breaks the tools views are synced to.
CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
MAX_TEXT = 10_000  # characters in a short text field (names, emails, subjects)
MAX_LONG_TEXT = 100_000  # characters in a long one (ticket descriptions)
EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+\.[^@\s]{2,}$"
CURRENCIES = frozenset(  # ISO 4217 codes of the currencies customers pay in
    ("aud", "brl", "cad", "chf", "cny", "czk", "dkk", "eur", "gbp", "hkd", "huf", "idr", "ils", "inr", "jpy", "krw",
     "mxn", "nok", "nzd", "pln", "sek", "sgd", "thb", "try", "usd", "zar")
)  # fmt: skip
SUBSCRIPTION_STATUSES = (
    "incomplete", "incomplete_expired", "trialing", "active", "past_due", "canceled", "unpaid", "paused",
)  # fmt: skip
INVOICE_STATUSES = ("draft", "open", "paid", "uncollectible", "void")
TICKET_STATUSES = ("new", "open", "pending", "hold", "solved", "closed", "deleted")
TICKET_PRIORITIES = ("low", "normal", "high", "urgent")
LIFECYCLE_STAGES = (
    "subscriber", "lead", "marketingqualifiedlead", "salesqualifiedlead", "opportunity", "customer", "evangelist",
    "other",
)  # fmt: skip
CONSENT_STATES = ("SUBSCRIBED", "UNSUBSCRIBED", "NEVER_SUBSCRIBED")
ZENDESK_ROLES = ("end-user", "agent", "admin")

Timestamp = pd.DatetimeTZDtype


# The rules contracts share, registered with pandera so a field names them: `pa.Field(email_syntax=())`.
@extensions.register_check_method()
def email_syntax(series: pd.Series) -> pd.Series:
    """Email syntax after trimming: surrounding spaces are mess to clean up later, not an invalid address."""
    return series.isna() | series.str.strip().str.match(EMAIL_PATTERN)


@extensions.register_check_method()
def phone_parsable(series: pd.Series) -> pd.Series:
    """Parsable into E.164, in international form or as a national number; judged once per distinct value."""
    verdicts = {value: _phone_ok(value) for value in series.dropna().unique()}
    return series.isna() | series.map(verdicts).fillna(False).astype(bool)


@extensions.register_check_method()
def iso_currency(series: pd.Series) -> pd.Series:
    return series.isna() | series.str.lower().isin(CURRENCIES)


# Checks whose verdict on a row changes with the time it is checked: a record they quarantined is checked again
# by every staging build, not only when a new version of it lands.
CLOCK_CHECKS = ("not_in_future",)


@extensions.register_check_method()
def not_in_future(series: pd.Series) -> pd.Series:
    return series.isna() | (series <= pd.Timestamp.now(tz="UTC") + CLOCK_SKEW)


@extensions.register_check_method()
def no_control_characters(series: pd.Series) -> pd.Series:
    return ~series.str.contains(CONTROL_CHARACTERS, na=False)


@extensions.register_check_method()
def signed_64_bit_id(series: pd.Series) -> pd.Series:
    """An id the source issues as a signed 64-bit integer: digits whose value fits (a bigger one is not theirs)."""
    digits = series.str.fullmatch(r"-?[0-9]{1,20}", na=False)
    return series.isna() | (digits & series.where(digits, "0").map(lambda value: -MAX_ID - 1 <= int(value) <= MAX_ID))


@extensions.register_check_method(statistics=["allowed"])
def one_of(series: pd.Series, *, allowed: str) -> pd.Series:
    """Values from the named constant of this module, read when the check runs so a fix applies at once."""
    return series.isna() | series.isin(globals()[allowed])


def _phone_ok(value: str) -> bool:
    for region in (None, "US", "GB", "DE", "FR"):
        try:
            if phonenumbers.is_possible_number(phonenumbers.parse(value, region)):
                return True
        except phonenumbers.NumberParseException:
            continue
    return False


def _time(nullable: bool = True, **checks: object) -> Any:
    return pa.Field(nullable=nullable, dtype_kwargs={"unit": "us", "tz": "UTC"}, **checks)


def _text(nullable: bool = True, long: bool = False, **checks: object) -> Any:
    limit = {"max_value": MAX_LONG_TEXT if long else MAX_TEXT}
    return pa.Field(nullable=nullable, str_length=limit, no_control_characters=(), **checks)


def _integer_id() -> Any:
    return pa.Field(nullable=False, unique=True, signed_64_bit_id=())


EMAIL = {"email_syntax": ()}
PHONE = {"phone_parsable": ()}
PAST = {"not_in_future": ()}


class Contract(pa.DataFrameModel):
    """What every staging row must satisfy: an id, every field of the JSON kind its API promises, and every time
    readable and plausible (the fields at fault are named by the candidates query, see `cdp_assets/mappings.py`)."""

    record_id: Series[str] = pa.Field(nullable=False, unique=True)
    is_deleted: Series[bool]
    wrong_type_count: Series[pd.Int64Dtype]
    time_fault_count: Series[pd.Int64Dtype]

    @pa.check("wrong_type_count")
    def json_kinds_as_promised(cls, s: Series[pd.Int64Dtype]) -> Series[bool]:
        """No field of another JSON kind than its API promises: a string for a number, an object for a text."""
        return s == 0

    @pa.check("time_fault_count")
    def times_plausible(cls, s: Series[pd.Int64Dtype]) -> Series[bool]:
        """No time in another unit (milliseconds), without a zone, unreadable, or outside the plausible range."""
        return s == 0

    class Config:
        coerce = True
        strict = False


class StripeCustomer(Contract):
    email: Series[str] = _text(**EMAIL)
    name: Series[str] = _text()
    phone: Series[str] = _text(**PHONE)
    currency: Series[str] = pa.Field(nullable=True, iso_currency=())
    balance_cents: Series[pd.Int64Dtype] = pa.Field(nullable=True)
    created_at: Series[Timestamp] = _time(nullable=False, **PAST)


class StripeSubscription(Contract):
    customer_id: Series[str] = pa.Field(nullable=False)
    status: Series[str] = pa.Field(nullable=False, one_of={"allowed": "SUBSCRIPTION_STATUSES"})
    unit_amount_cents: Series[pd.Int64Dtype] = pa.Field(nullable=True, ge=0)
    quantity: Series[pd.Int64Dtype] = pa.Field(nullable=True, ge=0)
    currency: Series[str] = pa.Field(nullable=True, iso_currency=())
    created_at: Series[Timestamp] = _time(nullable=False, **PAST)
    canceled_at: Series[Timestamp] = _time()

    @pa.dataframe_check
    def canceled_after_created(cls, df: pd.DataFrame) -> Series[bool]:
        return df["canceled_at"].isna() | (df["canceled_at"] >= df["created_at"])


class StripeInvoice(Contract):
    customer_id: Series[str] = pa.Field(nullable=False)
    status: Series[str] = pa.Field(nullable=False, one_of={"allowed": "INVOICE_STATUSES"})
    amount_due_cents: Series[pd.Int64Dtype] = pa.Field(nullable=False, ge=0)
    amount_paid_cents: Series[pd.Int64Dtype] = pa.Field(nullable=False, ge=0)
    currency: Series[str] = pa.Field(nullable=False, iso_currency=())
    created_at: Series[Timestamp] = _time(nullable=False, **PAST)


class HubSpotContact(Contract):
    record_id: Series[str] = _integer_id()
    email: Series[str] = _text(**EMAIL)
    first_name: Series[str] = _text()
    last_name: Series[str] = _text()
    phone: Series[str] = _text(**PHONE)
    street_address: Series[str] = _text()
    postal_code: Series[str] = _text()
    date_of_birth: Series[pa.Date] = pa.Field(nullable=True)  # unreadable ones are NULL already (mappings.py)
    lifecycle_stage: Series[str] = pa.Field(nullable=True, one_of={"allowed": "LIFECYCLE_STAGES"})
    updated_at: Series[Timestamp] = _time(nullable=False, **PAST)


class HubSpotCompany(Contract):
    record_id: Series[str] = _integer_id()
    name: Series[str] = _text()
    domain: Series[str] = _text()
    employee_count: Series[pd.Int64Dtype] = pa.Field(nullable=True, ge=0)


class HubSpotContactCompanies(Contract):
    record_id: Series[str] = _integer_id()
    primary_company_id: Series[str] = pa.Field(nullable=True)


class ZendeskUser(Contract):
    record_id: Series[str] = _integer_id()
    email: Series[str] = _text(**EMAIL)
    name: Series[str] = _text()
    phone: Series[str] = _text(**PHONE)
    role: Series[str] = pa.Field(nullable=True, one_of={"allowed": "ZENDESK_ROLES"})
    is_active: Series[pd.BooleanDtype] = pa.Field(nullable=False)
    created_at: Series[Timestamp] = _time(nullable=False)
    updated_at: Series[Timestamp] = _time(nullable=False)


class ZendeskTicket(Contract):
    record_id: Series[str] = _integer_id()
    subject: Series[str] = _text()
    description: Series[str] = _text(long=True)
    status: Series[str] = pa.Field(nullable=False, one_of={"allowed": "TICKET_STATUSES"})
    priority: Series[str] = pa.Field(nullable=True, one_of={"allowed": "TICKET_PRIORITIES"})
    requester_id: Series[str] = pa.Field(nullable=False)
    created_at: Series[Timestamp] = _time(nullable=False, **PAST)
    updated_at: Series[Timestamp] = _time(nullable=False)

    @pa.dataframe_check
    def updated_after_created(cls, df: pd.DataFrame) -> Series[bool]:
        return df["updated_at"] >= df["created_at"]


class KlaviyoProfile(Contract):
    email: Series[str] = _text(**EMAIL)
    phone_number: Series[str] = _text(**PHONE)
    external_id: Series[str] = _text()
    street_address: Series[str] = _text()
    postal_code: Series[str] = _text()
    email_marketing_consent: Series[str] = pa.Field(nullable=True, one_of={"allowed": "CONSENT_STATES"})
    updated_at: Series[Timestamp] = _time(nullable=False, **PAST)

    @pa.dataframe_check
    def has_an_identifier(cls, df: pd.DataFrame) -> Series[bool]:
        return df[["email", "phone_number", "external_id"]].notna().any(axis=1)


class KlaviyoEvent(Contract):
    profile_id: Series[str] = pa.Field(nullable=False)
    metric_id: Series[str] = pa.Field(nullable=False)
    occurred_at: Series[Timestamp] = _time(nullable=False, **PAST)


class KlaviyoMetric(Contract):
    name: Series[str] = pa.Field(nullable=False)


class MixpanelEvent(Contract):
    event_name: Series[str] = _text(nullable=False)
    distinct_id: Series[str] = pa.Field(nullable=False)
    insert_id: Series[str] = pa.Field(nullable=False)
    occurred_at: Series[Timestamp] = _time(nullable=False, **PAST)
    email: Series[str] = _text(**EMAIL)


CONTRACTS: dict[str, type[Contract]] = {
    "stripe__customers": StripeCustomer,
    "stripe__subscriptions": StripeSubscription,
    "stripe__invoices": StripeInvoice,
    "hubspot__contacts": HubSpotContact,
    "hubspot__companies": HubSpotCompany,
    "hubspot__contact_companies": HubSpotContactCompanies,
    "zendesk__users": ZendeskUser,
    "zendesk__tickets": ZendeskTicket,
    "klaviyo__profiles": KlaviyoProfile,
    "klaviyo__events": KlaviyoEvent,
    "klaviyo__metrics": KlaviyoMetric,
    "mixpanel__events": MixpanelEvent,
}

# What each check's failure means, for the `reason` quarantine keeps with it (by check name, before any arguments).
REASONS: dict[str, str] = {
    "not_nullable": "missing",
    "field_uniqueness": "repeated",
    "signed_64_bit_id": "not a 64-bit integer id (at most 2^63 - 1)",
    "str_length": "longer than allowed",
    "no_control_characters": "control character",
    "email_syntax": "not an email address",
    "phone_parsable": "not a phone number",
    "iso_currency": "not an ISO 4217 currency",
    "not_in_future": "in the future",
    "one_of": "not an allowed value",
    "greater_than_or_equal_to": "below the minimum",
    "canceled_after_created": "canceled before it was created",
    "updated_after_created": "updated before it was created",
    "has_an_identifier": "no email, phone number or external id",
    "coerce_dtype": "not of the column's type",
    "dtype": "not of the column's type",
}
