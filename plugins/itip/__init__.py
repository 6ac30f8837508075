# SPDX-License-Identifier: GPL-3.0-or-later
"""The iTIP core: pure functions from calendar objects to scheduling decisions (RFC 5546, RFC 6638).

No I/O, no clock: the storage layer passes the stored and written objects and "now", and gets back what to
store and which messages to deliver.
"""
from invito.plugins.itip.address import normalize
from invito.plugins.itip.apply import apply
from invito.plugins.itip.model import Applied, ITipMessage, Plan, Refused, Role, SchedulingError
from invito.plugins.itip.plan import plan
from invito.plugins.itip.status import changes_schedule_status, with_schedule_status
from invito.plugins.itip.view import changed_aspects, schedule_tag, significant_change

__all__ = ["Applied", "ITipMessage", "Plan", "Refused", "Role", "SchedulingError", "apply", "changed_aspects",
           "changes_schedule_status", "normalize", "plan",
           "schedule_tag", "significant_change", "with_schedule_status"]
