"""A test hook: `reach(name)` kills this process on the spot when the environment variable CDP_FAILPOINT names
that point.

The kill tests (tests/test_sync_kill.py, tests/test_staging_incremental.py) use it for a moment no outside observer
can time, such as after a destination answered and before the transaction recording the answer commits. Unset, as
everywhere outside those tests, it does nothing.
"""

import os
import signal

ENV = "CDP_FAILPOINT"


def reach(name: str) -> None:
    if os.environ.get(ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
