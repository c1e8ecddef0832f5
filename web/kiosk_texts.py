"""What the kiosk page says (docs/kiosk.md): its texts in both languages, and the
opening hours of the kiosk service when nobody can answer or it is closed. The page gets
both languages at once and switches without asking the server."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from flask_babel import force_locale
from flask_babel import gettext as _

from common.settings import Service, Settings

#: The year-end closure (common.hours.HoursRule), named as such in the opening hours.
NEW_YEAR = {"12-29", "12-30", "12-31", "01-01", "01-02", "01-03"}
WEEKDAYS_JA = "月火水木金土日"


def page_texts() -> dict[str, str]:
    return {
        "title": _("Remote window"),
        "welcome": _("Welcome. You can talk with city staff on the screen."),
        "start": _("Touch here to start"),
        "choose": _("What would you like help with?"),
        "connecting": _("Connecting. Please wait."),
        "waiting": _("Please wait. A staff member will answer soon."),
        "position": _("People before you"),
        "expected": _("Expected wait (minutes)"),
        "in_call": _("You are talking with city staff."),
        "show_document": _("Show a document"),
        "document_hint": _("Place the document under the camera, then touch the button."),
        "document_sent": _("The document picture was sent to the staff member."),
        "volume": _("Volume"),
        "hang_up": _("End the call"),
        "survey": _("How satisfied were you? Touch 1 to 5."),
        "survey_low": _("Not satisfied"),
        "survey_high": _("Very satisfied"),
        "thanks": _("Thank you. Everything you showed here has been deleted."),
        "back": _("Back"),
        "error": _("Sorry, the connection failed. Please try again."),
        "not_registered": _("This screen is not registered as a kiosk. Please call the staff."),
        "ended": _("The call has ended."),
        # nobody can answer (the session's state "unavailable"), or the service is closed
        "unavailable": _("No operator can answer right now."),
        "unavailable_choice": _("You can wait here until an operator can answer, or end "
                                "now."),
        "wait": _("Wait here"),
        "leave": _("End"),
        "standby": _("Please wait. You will be connected as soon as an operator can "
                     "answer."),
        "closed": _("The remote window is closed now."),
        "closed_hint": _("Please come again during the opening hours."),
        # the My Number card (the agent's own messages come with its answers)
        "card_title": _("Reading your My Number card"),
        "card_consent": _("To help fill in your application, the staff member asks to read "
                          "the information printed on your My Number card: name, address, "
                          "date of birth and sex. It is used during this call only and erased "
                          "when the call ends. Your individual number (My Number) is not "
                          "read."),
        "card_agree": _("Agree and read the card"),
        "card_decline": _("Do not read"),
        "card_insert": _("Place your My Number card on the card reader."),
        "card_checking": _("Checking the card."),
        "card_preparing": _("Getting the card reader ready. Please wait a moment."),
        "card_pin": _("Enter the 4-digit PIN for the card-surface information "
                      "(券面事項入力補助用暗証番号)."),
        "card_pin_note": _("Your PIN is not shown or recorded, and it is not sent to the "
                           "staff member."),
        "card_tries": _("Tries left:"),
        "card_clear": _("Delete"),
        "card_ok": _("Enter"),
        "card_reading": _("Reading the card. Please do not move it."),
        "card_done": _("The card was read. Please take your card."),
        "card_retry": _("Try again"),
        "card_cancel": _("Stop"),
        "card_close": _("Close"),
        "card_agent_down": _("The card reader is not ready. Please tell the staff member."),
        "card_no_reader": _("No card reader was found. Please tell the staff member."),
        "card_notice_agent_down": _("The card agent on the kiosk PC does not answer "
                                    "(is madoguchi-card-agent running?)."),
        "card_notice_no_reader": _("No card reader is connected to the kiosk PC."),
        "card_notice_pcsc": _("The kiosk PC's PC/SC service (pcscd) is not available."),
    }


def hours_texts(settings: Settings, service: Service, next_open: str) -> dict[str, Any]:
    """The service's opening hours and, when closed, its next opening, in both languages
    (from its hours settings, as ari_app decides them; common.hours)."""
    out: dict[str, Any] = {}
    opens: datetime | None = None
    if next_open:
        try:
            opens = datetime.fromisoformat(next_open).astimezone(ZoneInfo(settings.site.timezone))
        except ValueError:
            opens = None
    today = datetime.now(ZoneInfo(settings.site.timezone)).date()
    for lang in ("ja", "en"):
        with force_locale(lang):
            texts = {"hours": _opening_hours(service, lang), "next": ""}
            if opens is not None:
                at = _clock(f"{opens:%H:%M}", lang)
                if opens.date() == today:
                    texts["next"] = _("Opening today at %(time)s.", time=at)
                else:
                    day = (f"{opens.month}月{opens.day}日（{WEEKDAYS_JA[opens.weekday()]}）"
                           if lang == "ja" else f"{opens:%a} {opens.day} {opens:%b}")
                    texts["next"] = _("Next opening: %(date)s from %(time)s.", date=day,
                                      time=at)
            out[lang] = texts
    return out


def _opening_hours(service: Service, lang: str) -> str:
    names = {"mon": _("Mon"), "tue": _("Tue"), "wed": _("Wed"), "thu": _("Thu"),
             "fri": _("Fri"), "sat": _("Sat"), "sun": _("Sun")}
    days = set(service.open_days)
    if days == set(names):
        when = _("every day")
    elif days == {"mon", "tue", "wed", "thu", "fri"}:
        when = _("weekdays")
    else:
        listed = [names[d] for d in names if d in days]
        when = "・".join(listed) + "曜日" if lang == "ja" else ", ".join(listed)
    if (service.open_time, service.close_time) == ("00:00", "24:00"):
        text = _("Opening hours: %(days)s, 24 hours", days=when)
    else:
        text = _("Opening hours: %(days)s, %(open)s to %(close)s", days=when,
                 open=_clock(service.open_time, lang), close=_clock(service.close_time, lang))
    closed = [_("public holidays")] if service.closed_on_holidays else []
    dates = set(service.closed_dates)
    if dates and dates <= NEW_YEAR:
        closed.append(_("the New Year holidays"))
    elif dates:
        for mmdd in sorted(dates):
            month, day = (int(part) for part in mmdd.split("-"))
            closed.append(f"{month}月{day}日" if lang == "ja" else f"{day}/{month}")
    if closed:
        said = "・".join(closed) if lang == "ja" else (
            ", ".join(closed[:-1]) + " and " + closed[-1] if len(closed) > 1 else closed[0])
        text += ("" if lang == "ja" else " ") + _("(closed on %(days)s)", days=said)
    return text


def _clock(hhmm: str, lang: str) -> str:
    """``08:30`` → 8時30分 / 8:30."""
    hours, minutes = hhmm.split(":")
    if lang == "en":
        return f"{int(hours)}:{minutes}"
    return f"{int(hours)}時" + (f"{int(minutes)}分" if int(minutes) else "")
