"""The appointment as iCalendar (RFC 5545, `icalendar` package): METHOD PUBLISH with one
VEVENT (a stable UID, SEQUENCE raised on each change; CANCEL when it is cancelled), times in the
clinic's zone with its VTIMEZONE, and a reminder alarm the day before."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from icalendar import Alarm, Calendar, Event, vCalAddress

CONTENT_TYPE = "text/calendar; charset=UTF-8; method=PUBLISH"


def build_ics(*, uid: str, start: datetime, end: datetime | None, zone: str, summary: str,
              location: str, description: str, organizer: str, sequence: int = 0,
              cancelled: bool = False, stamp: datetime | None = None) -> bytes:
    tz = ZoneInfo(zone)
    calendar = Calendar()
    calendar.add("prodid", "-//Refloop//Appointments//EN")
    calendar.add("version", "2.0")
    calendar.add("method", "CANCEL" if cancelled else "PUBLISH")
    event = Event()
    event.add("uid", uid)
    event.add("dtstamp", stamp or datetime.now(UTC))
    event.add("sequence", sequence)
    event.add("organizer", vCalAddress(organizer))
    event.add("dtstart", start.astimezone(tz))
    event.add("dtend", (end or start + timedelta(minutes=30)).astimezone(tz))
    event.add("summary", summary)
    if location:
        event.add("location", location)
    if description:
        event.add("description", description)
    event.add("status", "CANCELLED" if cancelled else "CONFIRMED")
    if not cancelled:
        alarm = Alarm()
        alarm.add("action", "DISPLAY")
        alarm.add("description", summary)
        alarm.add("trigger", timedelta(hours=-24))
        event.add_component(alarm)
    calendar.add_component(event)
    calendar.add_missing_timezones()
    return bytes(calendar.to_ical())
