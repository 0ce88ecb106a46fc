"""How fresh each asset must be, as the UI shows it: what the hourly path builds within two hours, what only the
nightly path builds within a day and two hours (the runs start at :05 past the hour and at 02:30)."""

from datetime import timedelta

from dagster import FreshnessPolicy

HOURLY = FreshnessPolicy.time_window(fail_window=timedelta(hours=2), warn_window=timedelta(minutes=75))
NIGHTLY = FreshnessPolicy.time_window(fail_window=timedelta(hours=26), warn_window=timedelta(hours=25))
