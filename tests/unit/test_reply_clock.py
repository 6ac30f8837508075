# SPDX-License-Identifier: GPL-3.0-or-later
"""A guest whose clock is wrong: a REPLY stamped in the future is ordered as received, so the guest's
later answers still count."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from invito.plugins.itip import Applied, apply
from invito.plugins.itip.apply import CLOCK_SKEW
from tests.unit.itip_helpers import ALICE, BOB, attendee, calendar, vevent
from tests.unit.test_itip_apply import reply

RECEIVED = datetime(2030, 9, 2, 12, 0, tzinfo=timezone.utc)
ORGANIZER_COPY = calendar(vevent(sequence=1))


def merged(result: object):
    assert isinstance(result, Applied) and result.calendar is not None, result
    return result.calendar


def test_a_later_answer_wins_over_a_reply_stamped_in_the_future() -> None:
    wrong_clock = merged(apply(reply("ACCEPTED", stamp="20991231T000000Z"), ORGANIZER_COPY, ALICE, RECEIVED))
    assert attendee(wrong_clock, BOB).params["PARTSTAT"] == "ACCEPTED"
    # An hour later the guest (their clock fixed, or another mail program) changes their mind.
    later = merged(apply(reply("DECLINED", stamp="20300902T130000Z"), wrong_clock, ALICE,
                         RECEIVED + timedelta(hours=1, minutes=1)))
    assert attendee(later, BOB).params["PARTSTAT"] == "DECLINED"


def test_a_clock_a_little_ahead_keeps_its_own_stamp() -> None:
    ahead = (RECEIVED + CLOCK_SKEW - timedelta(seconds=1)).strftime("%Y%m%dT%H%M%SZ")
    first = merged(apply(reply("ACCEPTED", stamp=ahead), ORGANIZER_COPY, ALICE, RECEIVED))
    # A reply given just before it, arriving after it, is still the older one.
    before = (RECEIVED + timedelta(seconds=30)).strftime("%Y%m%dT%H%M%SZ")
    result = apply(reply("DECLINED", stamp=before), first, ALICE, RECEIVED + timedelta(minutes=1))
    assert not isinstance(result, Applied) and "out of order" in result.reason
