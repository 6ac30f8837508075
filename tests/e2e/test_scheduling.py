# SPDX-License-Identifier: GPL-3.0-or-later
"""Implicit scheduling as calendar users see it: real server, real CalDAV client, real files."""
from __future__ import annotations

import datetime
import uuid

import caldav
import icalendar
import pytest
import requests

from tests.e2e.conftest import PASSWORD, Server, has_home, outbound_entries

TZ = datetime.timezone.utc


def event(uid: str, summary: str = "Planning", start: str = "20301010T090000Z", end: str = "20301010T100000Z",
          organizer: str = "alice", attendees: tuple[str, ...] = ("bob", "carol"), extra: str = "",
          components: str = "") -> str:
    lines = [f"ATTENDEE;CN={a.title()};PARTSTAT=NEEDS-ACTION;RSVP=TRUE:mailto:{a}@example.com"
             for a in attendees]
    return "\r\n".join([
        "BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//Invito tests//EN",
        "BEGIN:VEVENT", f"UID:{uid}", "DTSTAMP:20300101T000000Z", f"DTSTART:{start}", f"DTEND:{end}",
        f"SUMMARY:{summary}", f"ORGANIZER;CN={organizer.title()}:mailto:{organizer}@example.com",
        f"ATTENDEE;CN={organizer.title()};PARTSTAT=ACCEPTED:mailto:{organizer}@example.com",
        *lines, *([extra] if extra else []), "END:VEVENT", *([components] if components else []),
        "END:VCALENDAR", ""])


def calendar(srv: Server, user: str, name: str = "work") -> caldav.Calendar:
    return srv.principal(user).make_calendar(name=name, cal_id=name)


def copy_of(srv: Server, user: str, uid: str) -> icalendar.Calendar:
    """The user's stored copy of an event, found the way a client would (by UID in their calendars)."""
    for cal in srv.principal(user).calendars():
        try:
            return icalendar.Calendar.from_ical(cal.event_by_uid(uid).data)
        except caldav.lib.error.NotFoundError:
            continue
    raise AssertionError(f"{user} has no copy of {uid}")


def attendee(cal: icalendar.Calendar, address: str, recurrence_id: str | None = None) -> icalendar.vCalAddress:
    for component in cal.walk("VEVENT"):
        rid = component.get("RECURRENCE-ID")
        if (rid.to_ical().decode() if rid else None) != recurrence_id:
            continue
        for a in component.get("ATTENDEE", []) if isinstance(component.get("ATTENDEE"), list) else [component.get("ATTENDEE")]:
            if a is not None and str(a).lower() == address.lower():
                return a
    raise AssertionError(f"{address} not in instance {recurrence_id}")


def inbox_methods(srv: Server, user: str, uid: str) -> list[str]:
    """Methods of the inbox messages about ``uid``, oldest first (inbox items are named by arrival)."""
    methods = []
    for item in sorted(srv.principal(user).schedule_inbox().get_items(), key=lambda i: str(i.url)):
        cal = icalendar.Calendar.from_ical(item.data)
        if any(str(c.get("UID")) == uid for c in cal.walk("VEVENT")):
            methods.append(str(cal.get("METHOD")))
    return methods


def set_partstat(srv: Server, user: str, uid: str, partstat: str, recurrence_id: str | None = None) -> None:
    for cal in srv.principal(user).calendars():
        try:
            obj = cal.event_by_uid(uid)
        except caldav.lib.error.NotFoundError:
            continue
        ical = icalendar.Calendar.from_ical(obj.data)
        attendee(ical, f"mailto:{user}@example.com", recurrence_id).params["PARTSTAT"] = partstat
        obj.data = ical.to_ical().decode()
        obj.save()
        return
    raise AssertionError(f"{user} has no copy of {uid}")


# -- discovery -----------------------------------------------------------------------------------


def test_discovery_advertises_scheduling(server: Server) -> None:
    options = requests.options(server.url, auth=("alice", PASSWORD), timeout=10)
    assert "calendar-auto-schedule" in options.headers["DAV"]
    principal = server.principal("alice")
    addresses = principal.calendar_user_address_set()
    assert "mailto:alice@example.com" in addresses
    assert principal.schedule_inbox().url.path.endswith("/alice/schedule-inbox/")
    assert principal.schedule_outbox().url.path.endswith("/alice/schedule-outbox/")
    assert principal.get_vcal_address().params["cutype"] == "INDIVIDUAL"
    # The inbox is not offered as a calendar to sync, and names where invitations land.
    assert all("schedule-" not in str(c.url) for c in principal.calendars())
    calendar(server, "alice", "work")
    answer = requests.request(
        "PROPFIND", str(principal.schedule_inbox().url), auth=("alice", PASSWORD), timeout=10,
        headers={"Depth": "0"}, data='<propfind xmlns="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"><prop>'
                                    '<resourcetype/><C:schedule-default-calendar-URL/></prop></propfind>')
    assert "schedule-inbox" in answer.text
    assert "/alice/work/</" in answer.text.replace("<D:href>", "").replace("<href>", "")


# -- organizer → internal attendees ------------------------------------------------------------


def test_invitation_reaches_internal_attendees(server: Server) -> None:
    uid = str(uuid.uuid4())
    calendar(server, "alice").save_event(event(uid))
    for user in ("bob", "carol"):
        copy = copy_of(server, user, uid)
        assert attendee(copy, f"mailto:{user}@example.com").params["PARTSTAT"] == "NEEDS-ACTION"
        assert inbox_methods(server, user, uid) == ["REQUEST"]
    organizer_copy = copy_of(server, "alice", uid)
    assert attendee(organizer_copy, "mailto:bob@example.com").params["SCHEDULE-STATUS"] == "1.2"


def test_reply_updates_organizer_copy(server: Server) -> None:
    uid = str(uuid.uuid4())
    calendar(server, "alice").save_event(event(uid))
    set_partstat(server, "bob", uid, "ACCEPTED")
    organizer_copy = copy_of(server, "alice", uid)
    assert attendee(organizer_copy, "mailto:bob@example.com").params["PARTSTAT"] == "ACCEPTED"
    assert attendee(organizer_copy, "mailto:carol@example.com").params["PARTSTAT"] == "NEEDS-ACTION"
    assert "REPLY" in inbox_methods(server, "alice", uid)


def test_attendee_only_edit_sends_nothing(server: Server) -> None:
    uid = str(uuid.uuid4())
    calendar(server, "alice").save_event(event(uid))
    cal = next(c for c in server.principal("bob").calendars())
    obj = cal.event_by_uid(uid)
    ical = icalendar.Calendar.from_ical(obj.data)
    alarm = icalendar.Alarm()
    alarm.add("ACTION", "DISPLAY")
    alarm.add("DESCRIPTION", "soon")
    alarm.add("TRIGGER", datetime.timedelta(minutes=-15))
    next(iter(ical.walk("VEVENT"))).add_component(alarm)
    obj.data = ical.to_ical().decode()
    obj.save()
    assert inbox_methods(server, "alice", uid) == []


def test_reschedule_updates_attendees_and_bumps_sequence(server: Server) -> None:
    uid = str(uuid.uuid4())
    cal = calendar(server, "alice")
    cal.save_event(event(uid))
    cal.save_event(event(uid, start="20301011T090000Z", end="20301011T100000Z"))
    copy = copy_of(server, "bob", uid)
    vevent = next(iter(copy.walk("VEVENT")))
    assert vevent["DTSTART"].dt == datetime.datetime(2030, 10, 11, 9, tzinfo=TZ)
    assert int(vevent["SEQUENCE"]) >= 1
    assert inbox_methods(server, "bob", uid) == ["REQUEST", "REQUEST"]


def test_insignificant_organizer_change_sends_nothing(server: Server) -> None:
    uid = str(uuid.uuid4())
    cal = calendar(server, "alice")
    cal.save_event(event(uid))
    cal.save_event(event(uid, extra="CATEGORIES:internal"))
    assert inbox_methods(server, "bob", uid) == ["REQUEST"]


def test_removed_attendee_and_deleted_event_are_cancelled(server: Server) -> None:
    uid = str(uuid.uuid4())
    cal = calendar(server, "alice")
    cal.save_event(event(uid))
    cal.save_event(event(uid, attendees=("bob",)))
    assert str(next(iter(copy_of(server, "carol", uid).walk("VEVENT")))["STATUS"]) == "CANCELLED"
    assert inbox_methods(server, "carol", uid) == ["REQUEST", "CANCEL"]
    cal.event_by_uid(uid).delete()
    assert str(next(iter(copy_of(server, "bob", uid).walk("VEVENT")))["STATUS"]) == "CANCELLED"


def test_attendee_deleting_copy_declines(server: Server) -> None:
    uid = str(uuid.uuid4())
    calendar(server, "alice").save_event(event(uid))
    next(iter(server.principal("bob").calendars())).event_by_uid(uid).delete()
    assert attendee(copy_of(server, "alice", uid), "mailto:bob@example.com").params["PARTSTAT"] == "DECLINED"


def test_recurring_instance_reply(server: Server) -> None:
    uid = str(uuid.uuid4())
    calendar(server, "alice").save_event(event(uid, extra="RRULE:FREQ=WEEKLY;COUNT=5"))
    bob_cal = next(iter(server.principal("bob").calendars()))
    obj = bob_cal.event_by_uid(uid)
    ical = icalendar.Calendar.from_ical(obj.data)
    master = next(iter(ical.walk("VEVENT")))
    instance = icalendar.Event()
    for key in ("UID", "SUMMARY", "ORGANIZER", "SEQUENCE", "DTSTAMP"):
        if key in master:
            instance[key] = master[key]
    instance.add("RECURRENCE-ID", datetime.datetime(2030, 10, 17, 9, tzinfo=TZ))
    instance.add("DTSTART", datetime.datetime(2030, 10, 17, 9, tzinfo=TZ))
    instance.add("DTEND", datetime.datetime(2030, 10, 17, 10, tzinfo=TZ))
    for a in master.get("ATTENDEE"):
        copy = icalendar.vCalAddress(str(a))
        copy.params.update(a.params)
        if str(a).lower() == "mailto:bob@example.com":
            copy.params["PARTSTAT"] = "ACCEPTED"
        instance.add("ATTENDEE", copy)
    ical.add_component(instance)
    obj.data = ical.to_ical().decode()
    obj.save()
    organizer_copy = copy_of(server, "alice", uid)
    assert attendee(organizer_copy, "mailto:bob@example.com", "20301017T090000Z").params["PARTSTAT"] == "ACCEPTED"
    assert attendee(organizer_copy, "mailto:bob@example.com").params["PARTSTAT"] == "NEEDS-ACTION"


# -- free-busy ---------------------------------------------------------------------------------


def test_freebusy_lookup(server: Server) -> None:
    calendar(server, "bob", "private").save_event(event(str(uuid.uuid4()), organizer="bob", attendees=()))
    principal = server.principal("alice")
    answer = principal.freebusy_request(datetime.datetime(2030, 10, 10, tzinfo=TZ),
                                        datetime.datetime(2030, 10, 11, tzinfo=TZ),
                                        [icalendar.vCalAddress("mailto:bob@example.com")])
    response = requests.post(  # the raw answer, to check busy periods exactly
        server.url + "alice/schedule-outbox/", auth=("alice", PASSWORD), timeout=10,
        headers={"Content-Type": "text/calendar"}, data="\r\n".join([
            "BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//t//EN", "METHOD:REQUEST", "BEGIN:VFREEBUSY",
            "UID:fb1", "DTSTAMP:20300101T000000Z", "DTSTART:20301010T000000Z", "DTEND:20301011T000000Z",
            "ORGANIZER:mailto:alice@example.com", "ATTENDEE:mailto:bob@example.com",
            "ATTENDEE:mailto:stranger@elsewhere.org", "END:VFREEBUSY", "END:VCALENDAR", ""]))
    assert answer  # the caldav client parsed a schedule-response
    assert response.status_code == 200
    assert "20301010T090000Z/20301010T100000Z" in response.text
    assert "3.7" in response.text  # the external address has no free-busy here


def test_other_posts_are_refused_clearly(server: Server) -> None:
    response = requests.post(server.url + "alice/schedule-outbox/", auth=("alice", PASSWORD), timeout=10,
                             headers={"Content-Type": "text/calendar"}, data=event("x"))
    assert response.status_code == 400
    assert "VFREEBUSY" in response.text
    response = requests.post(server.url + "bob/schedule-outbox/", auth=("alice", PASSWORD), timeout=10,
                             data="")
    assert response.status_code == 403


# -- Schedule-Tag ----------------------------------------------------------------------------------


def test_schedule_tag_survives_reply_and_guards_stale_writes(server: Server) -> None:
    uid = str(uuid.uuid4())
    url = server.url + "alice/work/meeting.ics"
    calendar(server, "alice")
    auth = ("alice", PASSWORD)
    put = requests.put(url, data=event(uid), auth=auth, timeout=10, headers={"Content-Type": "text/calendar"})
    assert put.status_code == 201
    assert "ETag" not in put.headers  # the server stamped SCHEDULE-STATUS: not what the client sent
    tag = requests.get(url, auth=auth, timeout=10).headers["Schedule-Tag"]
    assert put.headers["Schedule-Tag"] == tag

    set_partstat(server, "bob", uid, "ACCEPTED")  # the reply merges into alice's copy...
    assert requests.get(url, auth=auth, timeout=10).headers["Schedule-Tag"] == tag  # ...keeping the tag

    # alice's client, still holding the GET from before the reply, edits the title: accepted, and
    # bob's answer is not lost.
    edited = requests.put(url, data=event(uid, summary="Planning (room 2)"), auth=auth, timeout=10,
                          headers={"If-Schedule-Tag-Match": tag, "Content-Type": "text/calendar"})
    assert edited.status_code == 204
    assert attendee(copy_of(server, "alice", uid), "mailto:bob@example.com").params["PARTSTAT"] == "ACCEPTED"

    stale = requests.put(url, data=event(uid, summary="Other"), auth=auth, timeout=10,
                         headers={"If-Schedule-Tag-Match": tag, "Content-Type": "text/calendar"})
    assert stale.status_code == 412


# -- bad input -----------------------------------------------------------------------------------


def test_bad_input_gets_clear_errors(server: Server) -> None:
    calendar(server, "alice")
    auth = ("alice", PASSWORD)
    base = server.url + "alice/"
    malformed = requests.put(base + "work/bad.ics", data="BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nDTSTART:garbage\r\n",
                             auth=auth, timeout=10, headers={"Content-Type": "text/calendar"})
    assert malformed.status_code == 400
    assert "Invalid calendar data" in malformed.text

    foreign = requests.put(base + "work/foreign.ics", data=event("foreign", organizer="bob", attendees=("carol",)),
                           auth=auth, timeout=10, headers={"Content-Type": "text/calendar"})
    assert foreign.status_code == 403
    assert "valid-organizer" in foreign.text
    assert requests.get(base + "work/foreign.ics", auth=auth, timeout=10).status_code == 404

    server.principal("bob")  # bob's inbox exists
    into_other_inbox = requests.put(server.url + "bob/schedule-inbox/x.ics", data=event("x"), auth=auth, timeout=10)
    assert into_other_inbox.status_code == 403
    into_own_inbox = requests.put(base + "schedule-inbox/x.ics", data=event("x"), auth=auth, timeout=10)
    assert into_own_inbox.status_code == 403
    assert requests.delete(base + "schedule-inbox/", auth=auth, timeout=10).status_code == 403
    assert requests.request("MKCALENDAR", base + "schedule-outbox/", auth=auth, timeout=10).status_code == 403


def test_failed_scheduling_leaves_nothing_half_written(server: Server) -> None:
    """A duplicate UID in another calendar is refused before anything is stored or delivered."""
    uid = str(uuid.uuid4())
    calendar(server, "alice").save_event(event(uid))
    other = calendar(server, "alice", "home")
    with pytest.raises(caldav.lib.error.DAVError):
        other.save_event(event(uid, summary="Duplicate"))
    assert inbox_methods(server, "bob", uid) == ["REQUEST"]
    assert str(next(iter(copy_of(server, "bob", uid).walk("VEVENT")))["SUMMARY"]) == "Planning"


def test_deleting_a_whole_calendar_cancels_its_meetings(server: Server) -> None:
    uid = str(uuid.uuid4())
    cal = calendar(server, "alice", "projects")
    cal.save_event(event(uid))
    cal.delete()
    assert str(next(iter(copy_of(server, "bob", uid).walk("VEVENT")))["STATUS"]) == "CANCELLED"
    assert inbox_methods(server, "carol", uid) == ["REQUEST", "CANCEL"]


def test_external_guests_go_to_the_mail_spool(server: Server) -> None:
    uid = str(uuid.uuid4())
    guest = "mailto:Guest@Partner.example.org"
    calendar(server, "alice").save_event(event(uid, extra=f"ATTENDEE;CN=Guest;PARTSTAT=NEEDS-ACTION:{guest}"))
    entries = outbound_entries(server)
    assert [(e.method, e.uid, e.recipient) for e in entries] == [("REQUEST", uid, "mailto:guest@partner.example.org")]
    assert "METHOD:REQUEST" in entries[0].ics
    organizer_copy = copy_of(server, "alice", uid)
    assert attendee(organizer_copy, guest).params["SCHEDULE-STATUS"] == "1.0"  # queued for mail
    assert not has_home(server, "guest")  # never a user
