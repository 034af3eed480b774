"""The one connect helper: every part of the platform opens its PostgreSQL sessions the same way."""

from __future__ import annotations

import pytest

from totesys_platform.automation.change_detection import read_change_counters
from totesys_platform.connections import ConnectError, connect
from totesys_platform.lake.ingestion.source_schema import SourceError
from totesys_platform.local.postgres import free_port
from totesys_platform.local import simulator
from totesys_platform.warehouse.sessions import WarehouseConnectionError, connect_warehouse

HOSTILE = "p@ss#w:rd/?&x=1"


def _unreachable(password: str = HOSTILE) -> str:
    from urllib.parse import quote

    return f"postgresql://reader:{quote(password, safe='')}@127.0.0.1:{free_port()}/totesys"


def test_a_session_says_which_part_of_the_platform_holds_it(totesys_url):
    with connect(totesys_url, purpose="extract", what="totesys", hint="") as conn:
        assert conn.execute("SELECT current_setting('application_name')").fetchone() == ("totesys_platform extract",)


def test_an_unreachable_database_is_one_line_in_the_callers_error_without_the_password():
    url = _unreachable()
    with pytest.raises(SourceError) as failure:
        connect(url, purpose="extract", what="the totesys source database", hint="Check TOTESYS_DB_URL.",
                error=SourceError, connect_timeout=2)
    message = str(failure.value)
    assert message.startswith("cannot connect to the totesys source database postgresql://reader:***@127.0.0.1:")
    assert message.endswith("Check TOTESYS_DB_URL.") and "\n" not in message
    assert "p@ss" not in message and "rd/?" not in message
    assert failure.value.__cause__ is None and failure.value.__suppress_context__
    with pytest.raises(ConnectError):  # the default error type
        connect(url, purpose="x", what="db", hint="", connect_timeout=2)


@pytest.mark.parametrize("open_it, error", [
    (lambda url: simulator.connect(url), simulator.SimulatorError),
    (lambda url: connect_warehouse(url, 2), WarehouseConnectionError),
    (lambda url: read_change_counters(url, connect_timeout=2), ConnectError),
], ids=["simulator", "warehouse", "sensor"])
def test_every_caller_goes_through_it(open_it, error):
    with pytest.raises(error, match=r"^cannot connect to .*reader:\*\*\*@127\.0\.0\.1:\d+/totesys: ") as failure:
        open_it(_unreachable())
    assert "p@ss" not in str(failure.value)
