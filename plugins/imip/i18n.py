# SPDX-License-Identifier: GPL-3.0-or-later
"""Invitation mail in the guest's language: every visible string, dates, times and time-zone names.

Strings live here as one table per language (a test checks both tables have the same keys and
placeholders). Dates, times, zone names, weekday names and "a, b and c" lists come from Babel (CLDR), so
they read the way each language writes them: "Thursday, 10 October 2030" and "giovedì 10 ottobre 2030".
English uses the en_GB conventions (day before month, 24-hour clock): unambiguous for readers everywhere.
"""
from __future__ import annotations

import re
from datetime import date, datetime, timedelta
from typing import Mapping, Sequence

from babel import Locale
from babel.dates import format_date, format_skeleton, format_time, get_timezone_gmt, get_timezone_name
from babel.lists import format_list

DEFAULT = "en"
_LOCALES = {"en": "en_GB", "it": "it_IT"}
SUPPORTED = tuple(_LOCALES)

TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "subject.request": "Invitation: {title}",
        "subject.update": "Updated invitation: {title}",
        "subject.cancel": "Cancelled: {title}",
        "subject.ACCEPTED": "Accepted: {title}",
        "subject.DECLINED": "Declined: {title}",
        "subject.TENTATIVE": "Tentative: {title}",
        "subject.DELEGATED": "Delegated: {title}",
        "subject.reply": "Reply: {title}",
        "subject.counter": "New time proposed: {title}",
        "subject.declinecounter": "Proposal declined: {title}",
        "headline.request": "{organizer} has invited you to an event",
        "headline.update": "{organizer} has updated this event",
        "headline.cancel": "{organizer} has cancelled this event",
        "headline.cancel_instances": "{organizer} has cancelled these occurrences of the event",
        "headline.ACCEPTED": "{name} accepted: {title}",
        "headline.DECLINED": "{name} declined: {title}",
        "headline.TENTATIVE": "{name} tentatively accepted: {title}",
        "headline.DELEGATED": "{name} delegated: {title}",
        "headline.reply": "{name} replied: {title}",
        "headline.counter": "{name} proposes changes to: {title}",
        "headline.declinecounter": "{organizer} declined your proposed changes to: {title}",
        "note.from": "This answer was sent from {value}, not from the guest's own address.",
        "note.authentication": "The sender's mail could not be authenticated ({value}).",
        "note.uninvited": "{name} is not invited to this event: the answer was not recorded.",
        "footer.counter": "To accept, change the event in your calendar; to decline, use Decline in your mail "
                          "program.",
        "changes": "What changed: {aspects}",
        "aspect.time": "time",
        "aspect.recurrence": "recurrence",
        "aspect.title": "title",
        "aspect.location": "location",
        "aspect.description": "description",
        "aspect.status": "status",
        "aspect.participants": "participants",
        "label.when": "When",
        "label.where": "Where",
        "label.organizer": "Organizer",
        "label.guests": "Guests",
        "label.links": "Links",
        "label.attachments": "Attachments",
        "label.description": "Description",
        "label.comment": "Comment",
        "link.join": "Join the meeting",
        "link.page": "Event page",
        "attached": "attached",
        "guests_hidden": "The organizer has hidden the guest list.",
        "status.NEEDS-ACTION": "awaiting reply",
        "status.ACCEPTED": "accepted",
        "status.DECLINED": "declined",
        "status.TENTATIVE": "maybe",
        "status.DELEGATED": "delegated",
        "role.OPT-PARTICIPANT": "optional",
        "untitled": "(no title)",
        "via": "{name} via Invito",
        "footer.sent": "Sent by Invito on behalf of {author} to {reader}.",
        "footer.answer": "To answer, use Accept, Maybe or Decline in your mail or calendar program.",
        "when.zone": "{when} ({zone})",
        "when.all_day": "{date} (all day)",
        "when.days": "{start} – {end}",
        "when.same_day": "{date}, {start} – {end}",
        "when.at": "{date}, {time}",
        "when.span": "{start_date}, {start} – {end_date}, {end}",
        "rrule.repeats": "Repeats {rule}",
        "rrule.generic": "Repeats",
        "rrule.DAILY": "every day",
        "rrule.DAILY.n": "every {n} days",
        "rrule.WEEKLY": "every week",
        "rrule.WEEKLY.n": "every {n} weeks",
        "rrule.MONTHLY": "every month",
        "rrule.MONTHLY.n": "every {n} months",
        "rrule.YEARLY": "every year",
        "rrule.YEARLY.n": "every {n} years",
        "rrule.on_days": "on {days}",
        "rrule.on_monthday": "on day {day}",
        "rrule.count": "{n} times",
        "rrule.once": "once",
        "rrule.until": "until {date}",
        "rsvp.in_mail": "No answer buttons in your mail program? Answer on the web:",
        "rsvp.ACCEPTED": "Accept",
        "rsvp.TENTATIVE": "Maybe",
        "rsvp.DECLINED": "Decline",
        "rsvp.page": "Your answer",
        "rsvp.question": "Will you attend?",
        "rsvp.current": "Your answer so far: {answer}.",
        "rsvp.chosen": "You chose \u201c{answer}\u201d in the invitation email. Confirm it with the button below; "
                       "nothing has been sent yet.",
        "rsvp.scope.occurrence": "This answer is for this date only.",
        "rsvp.scope.series": "This answer is for every date of this event.",
        "rsvp.comment": "Message to the organizer (optional)",
        "rsvp.thanks": "Thank you: your answer \u201c{answer}\u201d has been sent to {organizer}.",
        "rsvp.change": "You can change your answer here at any time.",
        "rsvp.attached": "attached to the invitation email",
        "rsvp.error.form": "This page was open for too long or did not come from this server. Nothing was sent: "
                           "please choose your answer again.",
        "rsvp.error.answer": "Please choose Accept, Maybe or Decline.",
        "rsvp.error.changed": "The organizer has changed the time of this event since you opened this page. "
                              "Nothing was sent: please check the event below and answer again.",
        "rsvp.error.not_applied": "Your answer could not be recorded. Please answer from your mail program, or "
                                  "write to the organizer.",
        "rsvp.error.internal": "Something went wrong on the server, and your answer may not have been recorded. "
                               "Please try again later.",
        "rsvp.unknown.title": "This link does not work",
        "rsvp.unknown.text": "Check that you opened the whole link from your invitation email. If it still does "
                             "not work, ask the organizer to send the invitation again.",
        "rsvp.gone.title": "This event no longer exists",
        "rsvp.gone.text": "The organizer has removed this event, or this date of it: there is nothing to answer.",
        "rsvp.cancelled.title": "This event has been cancelled",
        "rsvp.cancelled.text": "The organizer has cancelled it: there is nothing to answer.",
        "rsvp.not_invited.title": "You are no longer invited",
        "rsvp.not_invited.text": "The organizer has taken you off the guest list of this event.",
        "rsvp.over.title": "This event is over",
        "rsvp.over.text": "Answers are closed because the event has ended.",
        "rsvp.too_complex.title": "This page cannot take your answer",
        "rsvp.too_complex.text": "The event repeats in a way too complex to check here. Answer from your "
                                 "calendar program, or tell the organizer.",
        "rsvp.busy.title": "Too many requests",
        "rsvp.busy.text": "Please wait {seconds} seconds, then load this page again.",
        "rsvp.language": "Language",
        "rsvp.footer": "Answering here is the same as answering from your mail program. Served by Invito.",
    },
    "it": {
        "subject.request": "Invito: {title}",
        "subject.update": "Invito aggiornato: {title}",
        "subject.cancel": "Annullato: {title}",
        "subject.ACCEPTED": "Accettato: {title}",
        "subject.DECLINED": "Rifiutato: {title}",
        "subject.TENTATIVE": "Forse: {title}",
        "subject.DELEGATED": "Delegato: {title}",
        "subject.reply": "Risposta: {title}",
        "subject.counter": "Nuovo orario proposto: {title}",
        "subject.declinecounter": "Proposta rifiutata: {title}",
        "headline.request": "{organizer} ti ha invitato a un evento",
        "headline.update": "{organizer} ha aggiornato questo evento",
        "headline.cancel": "{organizer} ha annullato questo evento",
        "headline.cancel_instances": "{organizer} ha annullato queste date dell'evento",
        "headline.ACCEPTED": "{name} ha accettato: {title}",
        "headline.DECLINED": "{name} ha rifiutato: {title}",
        "headline.TENTATIVE": "{name} ha accettato con riserva: {title}",
        "headline.DELEGATED": "{name} ha delegato: {title}",
        "headline.reply": "{name} ha risposto: {title}",
        "headline.counter": "{name} propone modifiche a: {title}",
        "headline.declinecounter": "{organizer} ha rifiutato le modifiche che hai proposto a: {title}",
        "note.from": "Questa risposta è stata inviata da {value}, non dall'indirizzo dell'invitato.",
        "note.authentication": "Non è stato possibile autenticare la posta del mittente ({value}).",
        "note.uninvited": "{name} non è invitato a questo evento: la risposta non è stata registrata.",
        "footer.counter": "Per accettare, modifica l'evento nel tuo calendario; per rifiutare, usa Rifiuta nel "
                          "tuo programma di posta.",
        "changes": "Cosa è cambiato: {aspects}",
        "aspect.time": "orario",
        "aspect.recurrence": "ricorrenza",
        "aspect.title": "titolo",
        "aspect.location": "luogo",
        "aspect.description": "descrizione",
        "aspect.status": "stato",
        "aspect.participants": "partecipanti",
        "label.when": "Quando",
        "label.where": "Dove",
        "label.organizer": "Organizzatore",
        "label.guests": "Invitati",
        "label.links": "Collegamenti",
        "label.attachments": "Allegati",
        "label.description": "Descrizione",
        "label.comment": "Commento",
        "link.join": "Partecipa alla riunione",
        "link.page": "Pagina dell'evento",
        "attached": "allegato",
        "guests_hidden": "L'organizzatore ha nascosto l'elenco degli invitati.",
        "status.NEEDS-ACTION": "in attesa di risposta",
        "status.ACCEPTED": "ha accettato",
        "status.DECLINED": "ha rifiutato",
        "status.TENTATIVE": "forse",
        "status.DELEGATED": "ha delegato",
        "role.OPT-PARTICIPANT": "facoltativo",
        "untitled": "(senza titolo)",
        "via": "{name} tramite Invito",
        "footer.sent": "Inviato da Invito per conto di {author} a {reader}.",
        "footer.answer": "Per rispondere usa Accetta, Forse o Rifiuta nel tuo programma di posta o di calendario.",
        "when.zone": "{when} ({zone})",
        "when.all_day": "{date} (tutto il giorno)",
        "when.days": "{start} – {end}",
        "when.same_day": "{date}, {start} – {end}",
        "when.at": "{date}, {time}",
        "when.span": "{start_date}, {start} – {end_date}, {end}",
        "rrule.repeats": "Si ripete {rule}",
        "rrule.generic": "Si ripete",
        "rrule.DAILY": "ogni giorno",
        "rrule.DAILY.n": "ogni {n} giorni",
        "rrule.WEEKLY": "ogni settimana",
        "rrule.WEEKLY.n": "ogni {n} settimane",
        "rrule.MONTHLY": "ogni mese",
        "rrule.MONTHLY.n": "ogni {n} mesi",
        "rrule.YEARLY": "ogni anno",
        "rrule.YEARLY.n": "ogni {n} anni",
        "rrule.on_days": "di {days}",
        "rrule.on_monthday": "il giorno {day}",
        "rrule.count": "{n} volte",
        "rrule.once": "una volta",
        "rrule.until": "fino a {date}",
        "rsvp.in_mail": "Il tuo programma di posta non mostra i pulsanti di risposta? Rispondi sul web:",
        "rsvp.ACCEPTED": "Accetta",
        "rsvp.TENTATIVE": "Forse",
        "rsvp.DECLINED": "Rifiuta",
        "rsvp.page": "La tua risposta",
        "rsvp.question": "Parteciperai?",
        "rsvp.current": "La tua risposta finora: {answer}.",
        "rsvp.chosen": "Nell'email di invito hai scelto \u00ab{answer}\u00bb. Confermalo con il pulsante qui sotto; "
                       "non è stato ancora inviato nulla.",
        "rsvp.scope.occurrence": "Questa risposta vale solo per questa data.",
        "rsvp.scope.series": "Questa risposta vale per tutte le date di questo evento.",
        "rsvp.comment": "Messaggio per l'organizzatore (facoltativo)",
        "rsvp.thanks": "Grazie: la tua risposta \u00ab{answer}\u00bb è stata inviata a {organizer}.",
        "rsvp.change": "Puoi cambiare qui la tua risposta in qualsiasi momento.",
        "rsvp.attached": "allegato all'email di invito",
        "rsvp.error.form": "Questa pagina è rimasta aperta troppo a lungo o non proviene da questo server. Non è "
                           "stato inviato nulla: scegli di nuovo la tua risposta.",
        "rsvp.error.answer": "Scegli Accetta, Forse o Rifiuta.",
        "rsvp.error.changed": "L'organizzatore ha cambiato l'orario di questo evento da quando hai aperto questa "
                              "pagina. Non è stato inviato nulla: controlla l'evento qui sotto e rispondi di nuovo.",
        "rsvp.error.not_applied": "Non è stato possibile registrare la tua risposta. Rispondi dal tuo programma di "
                                  "posta, oppure scrivi all'organizzatore.",
        "rsvp.error.internal": "Si è verificato un problema sul server e la tua risposta potrebbe non essere stata "
                               "registrata. Riprova più tardi.",
        "rsvp.unknown.title": "Questo link non funziona",
        "rsvp.unknown.text": "Controlla di aver aperto il link completo dell'email di invito. Se ancora non "
                             "funziona, chiedi all'organizzatore di inviarti di nuovo l'invito.",
        "rsvp.gone.title": "Questo evento non esiste più",
        "rsvp.gone.text": "L'organizzatore ha eliminato questo evento, o questa sua data: non c'è niente a cui "
                          "rispondere.",
        "rsvp.cancelled.title": "Questo evento è stato annullato",
        "rsvp.cancelled.text": "L'organizzatore lo ha annullato: non c'è niente a cui rispondere.",
        "rsvp.not_invited.title": "Non sei più tra gli invitati",
        "rsvp.not_invited.text": "L'organizzatore ti ha tolto dagli invitati di questo evento.",
        "rsvp.over.title": "Questo evento è terminato",
        "rsvp.over.text": "Le risposte sono chiuse perché l'evento è finito.",
        "rsvp.too_complex.title": "Questa pagina non può accettare la tua risposta",
        "rsvp.too_complex.text": "L'evento si ripete in modo troppo complesso da verificare qui. Rispondi dal "
                                 "tuo programma di calendario, o avvisa l'organizzatore.",
        "rsvp.busy.title": "Troppe richieste",
        "rsvp.busy.text": "Attendi {seconds} secondi, poi ricarica questa pagina.",
        "rsvp.language": "Lingua",
        "rsvp.footer": "Rispondere qui equivale a rispondere dal tuo programma di posta. Servito da Invito.",
    },
}

_WEEKDAYS = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")  # Babel numbers weekdays from Monday = 0
_RULE_PARTS = {"FREQ", "INTERVAL", "COUNT", "UNTIL", "BYDAY", "BYMONTHDAY", "WKST"}  # what we can put in words
_ZONE_ABBREVIATION = re.compile(r"[A-Z]{2,5}")


def choose(attendee_language: str | None, default: str) -> str:
    """The language to write in: the attendee's (LANGUAGE parameter, "it-IT" → "it"), else ``default``."""
    for tag in (attendee_language, default):
        primary = re.split(r"[-_,;\s]", (tag or "").strip(), maxsplit=1)[0].lower()
        if primary in _LOCALES:
            return primary
    return DEFAULT


class Localizer:
    """Strings and date formatting for one language (one of :data:`SUPPORTED`)."""

    def __init__(self, language: str) -> None:
        self.language = choose(language, DEFAULT)
        self.locale = Locale.parse(_LOCALES[self.language])
        self._texts = TEXTS[self.language]

    def text(self, key: str, **values: object) -> str:
        return self._texts[key].format(**values)

    def has(self, key: str) -> bool:
        return key in self._texts

    def join(self, items: Sequence[str]) -> str:
        """``["a", "b", "c"]`` → "a, b and c" / "a, b e c"."""
        return format_list(list(items), locale=self.locale) if items else ""

    def aspects(self, changes: Sequence[str]) -> str:
        """"What changed: time and location"; aspects without a translation are shown as given."""
        names = [self.text("aspect." + a) if self.has("aspect." + a) else a for a in changes]
        return self.text("changes", aspects=self.join(names))

    def when(self, start: date, end: date | None, tzid: str | None = None) -> str:
        """The full span in the event's own zone, zone named: "Thursday, 10 October 2030, 09:00 – 10:00 (…)".

        ``end`` is exclusive, as DTEND is: an all-day event on the 10th ends on the 11th.
        """
        if not isinstance(start, datetime):
            last = end - timedelta(days=1) if isinstance(end, date) and not isinstance(end, datetime) else start
            if last <= start:
                return self.text("when.all_day", date=self._date(start))
            return self.text("when.days", start=self._date(start), end=self._date(last))
        if isinstance(end, datetime) and end.tzinfo is not None and start.tzinfo is not None:
            end = end.astimezone(start.tzinfo)
        if not isinstance(end, datetime) or end <= start:
            text = self.text("when.at", date=self._date(start), time=self._time(start))
        elif end.date() == start.date():
            text = self.text("when.same_day", date=self._date(start), start=self._time(start), end=self._time(end))
        else:
            text = self.text("when.span", start_date=self._date(start), start=self._time(start),
                             end_date=self._date(end), end=self._time(end))
        zone = self.zone_name(start, tzid)
        return self.text("when.zone", when=text, zone=zone) if zone else text

    def short_when(self, start: date, tzid: str | None = None) -> str:
        """For subjects: "Thu, 10 Oct 2030 09:00 (CEST)"."""
        day = format_skeleton("yMMMEd", start, locale=self.locale)
        if not isinstance(start, datetime):
            return day
        text = f"{day} {self._time(start)}"
        zone = self._zone_abbreviation(start, tzid)
        return f"{text} ({zone})" if zone else text

    def zone_name(self, moment: datetime, tzid: str | None = None) -> str:
        """"Central European Summer Time" for IANA zones; a zone Babel does not know keeps its TZID."""
        if moment.tzinfo is None:
            return ""  # floating time: the same wall-clock time wherever the guest is
        if _iana(moment):
            return get_timezone_name(moment, "long", locale=self.locale)
        return tzid or get_timezone_gmt(moment, "long", locale=self.locale)

    def repeats(self, rule: Mapping[str, Sequence[object]]) -> str:
        """A recurrence rule in words; parts that have no words here reduce it to its frequency."""
        freq = str(_first(rule, "FREQ") or "").upper()
        if not self.has("rrule." + freq):
            return self.text("rrule.generic")
        interval = int(_first(rule, "INTERVAL") or 1)
        words = [self.text(f"rrule.{freq}.n", n=interval) if interval > 1 else self.text("rrule." + freq)]
        if set(rule) - _RULE_PARTS:
            return self.text("rrule.repeats", rule=words[0])
        days = [str(d).upper() for d in rule.get("BYDAY", [])]
        monthdays = list(rule.get("BYMONTHDAY", []))
        if days and (freq not in ("DAILY", "WEEKLY") or any(d not in _WEEKDAYS for d in days)):
            return self.text("rrule.repeats", rule=words[0])  # "the second Tuesday" and alike
        if monthdays and (freq != "MONTHLY" or len(monthdays) > 1 or int(monthdays[0]) < 0):
            return self.text("rrule.repeats", rule=words[0])
        if days:
            names = self.locale.days["format"]["wide"]
            words.append(self.text("rrule.on_days", days=self.join([names[_WEEKDAYS.index(d)] for d in days])))
        if monthdays:
            words.append(self.text("rrule.on_monthday", day=int(monthdays[0])))
        text = " ".join(words)
        count, until = _first(rule, "COUNT"), _first(rule, "UNTIL")
        if count is not None:
            count = int(count)
            text += ", " + (self.text("rrule.count", n=count) if count > 1 else self.text("rrule.once"))
        elif isinstance(until, date):
            text += ", " + self.text("rrule.until", date=self._date(until))
        return self.text("rrule.repeats", rule=text)

    def _date(self, value: date) -> str:
        return format_date(value, "full", locale=self.locale)

    def _time(self, value: datetime) -> str:
        return format_time(value, "short", locale=self.locale)

    def _zone_abbreviation(self, moment: datetime, tzid: str | None) -> str:
        if moment.tzinfo is None:
            return ""
        if _iana(moment):
            short = get_timezone_name(moment, "short", locale=self.locale)
            if _ZONE_ABBREVIATION.fullmatch(short):
                return short
        return get_timezone_gmt(moment, "long", locale=self.locale)  # "GMT+02:00"


def _iana(moment: datetime) -> bool:
    """Whether the zone is one Babel can name (zoneinfo or the fixed UTC), not one built from a VTIMEZONE."""
    return bool(getattr(moment.tzinfo, "key", None)) or (
        moment.utcoffset() == timedelta(0) and moment.tzname() in ("UTC", "GMT"))


def _first(rule: Mapping[str, Sequence[object]], name: str) -> object | None:
    found = rule.get(name)
    if isinstance(found, (list, tuple)):
        return found[0] if found else None
    return found
