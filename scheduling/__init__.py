"""Patient self-scheduling: the patient link, slot sources (FHIR Schedule/Slot, IHE $find,
SMART Scheduling Links, HL7 v2 SRM), booking without double-booking, confirmations with .ics,
reminders, preparation questionnaires, no-show recovery and the waitlist. See docs/scheduling.md."""
