"""The patient's words, in English and Spanish: page texts and dates. No locale database is
needed (month and day names are spelled out here), so pages render the same everywhere."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

LANGUAGES = ("en", "es")

DAYS = {"en": ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"],
        "es": ["lunes", "martes", "miércoles", "jueves", "viernes", "sábado", "domingo"]}
MONTHS = {"en": ["January", "February", "March", "April", "May", "June", "July", "August",
                 "September", "October", "November", "December"],
          "es": ["enero", "febrero", "marzo", "abril", "mayo", "junio", "julio", "agosto",
                 "septiembre", "octubre", "noviembre", "diciembre"]}


def format_when(moment: datetime, zone: str, language: str) -> str:
    """'Tuesday 2 March 2027, 9:30 AM' / 'martes 2 de marzo de 2027, 9:30'."""
    local = moment.astimezone(ZoneInfo(zone))
    if language == "es":
        return (f"{DAYS['es'][local.weekday()]} {local.day} de {MONTHS['es'][local.month - 1]} "
                f"de {local.year}, {local.hour}:{local.minute:02d}")
    hour = local.hour % 12 or 12
    return (f"{DAYS['en'][local.weekday()]} {local.day} {MONTHS['en'][local.month - 1]} "
            f"{local.year}, {hour}:{local.minute:02d} {'AM' if local.hour < 12 else 'PM'}")


def format_day(moment: datetime, zone: str, language: str) -> str:
    local = moment.astimezone(ZoneInfo(zone))
    if language == "es":
        return f"{DAYS['es'][local.weekday()]} {local.day} de {MONTHS['es'][local.month - 1]}"
    return f"{DAYS['en'][local.weekday()]} {local.day} {MONTHS['en'][local.month - 1]}"


def format_time(moment: datetime, zone: str, language: str) -> str:
    local = moment.astimezone(ZoneInfo(zone))
    if language == "es":
        return f"{local.hour}:{local.minute:02d}"
    return f"{local.hour % 12 or 12}:{local.minute:02d} {'AM' if local.hour < 12 else 'PM'}"


TEXT: dict[str, dict[str, str]] = {
    "title": {"en": "Your appointment", "es": "Su cita"},
    "skip": {"en": "Skip to content", "es": "Ir al contenido"},
    "other_language": {"en": "Español", "es": "English"},
    "dob_heading": {"en": "Confirm it is you", "es": "Confirme que es usted"},
    "dob_intro": {"en": "Enter your date of birth to continue.",
                  "es": "Escriba su fecha de nacimiento para continuar."},
    "dob_legend": {"en": "Date of birth", "es": "Fecha de nacimiento"},
    "day": {"en": "Day", "es": "Día"},
    "month": {"en": "Month", "es": "Mes"},
    "year": {"en": "Year", "es": "Año"},
    "continue": {"en": "Continue", "es": "Continuar"},
    "dob_wrong": {"en": "That date of birth does not match. Attempts left: {left}.",
                  "es": "Esa fecha de nacimiento no coincide. Intentos restantes: {left}."},
    "dob_invalid": {"en": "Enter a real date: day, month and four-digit year.",
                    "es": "Escriba una fecha válida: día, mes y año de cuatro cifras."},
    "locked_heading": {"en": "This link is locked", "es": "Este enlace está bloqueado"},
    "locked_text": {"en": "Too many attempts. Our scheduling team has been told and will "
                          "contact you. You can also call us.",
                    "es": "Demasiados intentos. Nuestro equipo de citas ya lo sabe y se "
                          "pondrá en contacto con usted. También puede llamarnos."},
    "invalid_heading": {"en": "This link does not work", "es": "Este enlace no funciona"},
    "invalid_text": {"en": "The link has expired or is no longer valid. Reply to our text "
                           "message or call us for a new one.",
                     "es": "El enlace venció o ya no es válido. Responda a nuestro mensaje "
                           "o llámenos para recibir uno nuevo."},
    "too_large_heading": {"en": "That was too much to send",
                          "es": "Eso era demasiado para enviar"},
    "too_large_text": {"en": "Nothing was sent. Go back and try again, or call us.",
                       "es": "No se envió nada. Vuelva atrás e inténtelo de nuevo, o llámenos."},
    "throttled": {"en": "Too many attempts from this device. Try again in an hour.",
                  "es": "Demasiados intentos desde este dispositivo. Inténtelo en una hora."},
    "session_heading": {"en": "Please open your link again",
                        "es": "Abra su enlace de nuevo"},
    "session_text": {"en": "For your privacy, this page closed after some minutes. Open the "
                           "link in your text message again.",
                     "es": "Por su privacidad, esta página se cerró después de unos minutos. "
                           "Abra otra vez el enlace de su mensaje de texto."},
    "choose_heading": {"en": "Choose a time", "es": "Elija un horario"},
    "choose_intro": {"en": "These are the next open times for your {what} visit.",
                     "es": "Estos son los próximos horarios libres para su visita de {what}."},
    "with": {"en": "with {who}", "es": "con {who}"},
    "at": {"en": "at {where}", "es": "en {where}"},
    "book": {"en": "Book this time", "es": "Reservar este horario"},
    "later": {"en": "Show later dates", "es": "Ver fechas posteriores"},
    "no_slots": {"en": "There are no open times online right now. Call us and we will find "
                       "one with you.",
                 "es": "No hay horarios libres en línea ahora. Llámenos y buscaremos uno "
                       "con usted."},
    "taken": {"en": "Sorry, someone else just booked that time. Here are the next open "
                    "times.",
              "es": "Lo sentimos, otra persona acaba de reservar ese horario. Estos son los "
                    "próximos horarios libres."},
    "booked_heading": {"en": "You are booked", "es": "Su cita está reservada"},
    "booked_intro": {"en": "We sent you a confirmation.",
                     "es": "Le enviamos una confirmación."},
    "appointment_heading": {"en": "Your appointment", "es": "Su cita"},
    "when": {"en": "When", "es": "Cuándo"},
    "where": {"en": "Where", "es": "Dónde"},
    "who": {"en": "Who", "es": "Con quién"},
    "add_calendar": {"en": "Add to my calendar (.ics)", "es": "Agregar a mi calendario (.ics)"},
    "reschedule": {"en": "Change the time", "es": "Cambiar el horario"},
    "cancel": {"en": "Cancel the appointment", "es": "Cancelar la cita"},
    "cancel_heading": {"en": "Cancel your appointment?", "es": "¿Cancelar su cita?"},
    "cancel_text": {"en": "Your referral stays open and we will help you book another time.",
                    "es": "Su referido sigue abierto y le ayudaremos a reservar otro horario."},
    "cancel_yes": {"en": "Yes, cancel it", "es": "Sí, cancelarla"},
    "keep": {"en": "No, keep it", "es": "No, mantenerla"},
    "cancelled_heading": {"en": "Your appointment is cancelled", "es": "Su cita fue cancelada"},
    "book_again": {"en": "Book another time", "es": "Reservar otro horario"},
    "prepare_heading": {"en": "Before your visit", "es": "Antes de su visita"},
    "prepare_link": {"en": "Answer the questions before your visit",
                     "es": "Conteste las preguntas antes de su visita"},
    "prepare_done": {"en": "Thank you. Your answers were sent to the clinic.",
                     "es": "Gracias. Sus respuestas se enviaron a la clínica."},
    "answered": {"en": "You answered the questions. Thank you.",
                 "es": "Ya contestó las preguntas. Gracias."},
    "send": {"en": "Send my answers", "es": "Enviar mis respuestas"},
    "yes": {"en": "Yes", "es": "Sí"},
    "no": {"en": "No", "es": "No"},
    "required": {"en": "(required)", "es": "(obligatorio)"},
    "missing_answer": {"en": "Please answer: {what}", "es": "Por favor conteste: {what}"},
    "waitlist_heading": {"en": "Want an earlier date?", "es": "¿Quiere una fecha más pronto?"},
    "waitlist_text": {"en": "If an earlier time opens, we will text you. The first person to "
                            "say yes gets it.",
                      "es": "Si se libera un horario más pronto, le enviaremos un mensaje. La "
                            "primera persona que diga sí lo obtiene."},
    "waitlist_join": {"en": "Yes, offer me earlier times", "es": "Sí, ofrézcanme horarios "
                                                                 "más pronto"},
    "waitlist_leave": {"en": "Stop offering earlier times",
                       "es": "Dejar de ofrecerme horarios más pronto"},
    "waitlist_on": {"en": "You are on the list for an earlier date.",
                    "es": "Está en la lista para una fecha más pronto."},
    "offer_heading": {"en": "An earlier time is open", "es": "Hay un horario más pronto"},
    "offer_take": {"en": "Take this time", "es": "Tomar este horario"},
    "offer_gone": {"en": "Sorry, this time is no longer available. Your appointment has not "
                         "changed.",
                   "es": "Lo sentimos, este horario ya no está disponible. Su cita no cambió."},
    "prefs_heading": {"en": "When can you come?", "es": "¿Cuándo puede venir?"},
    "prefs_intro": {"en": "The clinic books by phone. Tell us the days and times that suit "
                          "you and we will text you the appointment.",
                    "es": "La clínica reserva por teléfono. Díganos qué días y horas le "
                          "convienen y le enviaremos la cita por mensaje."},
    "prefs_days": {"en": "Days", "es": "Días"},
    "prefs_times": {"en": "Times", "es": "Horas"},
    "morning": {"en": "Morning", "es": "Mañana"},
    "afternoon": {"en": "Afternoon", "es": "Tarde"},
    "earliest": {"en": "Earliest date (optional)", "es": "Fecha más temprana (opcional)"},
    "prefs_send": {"en": "Send my preferences", "es": "Enviar mis preferencias"},
    "prefs_sent": {"en": "Thank you. We asked the clinic for a time and will text you.",
                   "es": "Gracias. Pedimos un horario a la clínica y le enviaremos un "
                         "mensaje."},
    "prefs_pick": {"en": "Choose at least one day and one time.",
                   "es": "Elija al menos un día y una hora."},
    "handoff_heading": {"en": "Finish booking", "es": "Termine su reserva"},
    "handoff_text": {"en": "This clinic finishes the booking on its own page.",
                     "es": "Esta clínica termina la reserva en su propia página."},
    "handoff_go": {"en": "Continue to the clinic's page", "es": "Continuar a la página de "
                                                                 "la clínica"},
    "done_cannot": {"en": "This referral cannot be booked online now. Call us.",
                    "es": "Este referido no se puede reservar en línea ahora. Llámenos."},
    "call_us": {"en": "Call us: {phone}", "es": "Llámenos: {phone}"},
    "sign_out": {"en": "Close", "es": "Cerrar"},
    "closed": {"en": "You closed the page. Open your link again to come back.",
               "es": "Cerró la página. Abra su enlace de nuevo para volver."},
    "confirmed": {"en": "You confirmed this appointment.", "es": "Usted confirmó esta cita."},
}


def t(key: str, language: str, **values: str) -> str:
    text = TEXT[key].get(language) or TEXT[key]["en"]
    return text.format(**values) if values else text
