"""Link types: one name per kind of link, and the older words stored Tasks hold still read."""

from referrals.model import LINK_APPOINTMENT, LINK_CONSULT_NOTE, Link


def test_a_consult_note_link_is_recognised_under_its_old_and_new_type():
    old = Link("consult-note", "DocumentReference/d1")
    new = Link(LINK_CONSULT_NOTE, "DocumentReference/d2")
    assert old.is_a(LINK_CONSULT_NOTE) and new.is_a(LINK_CONSULT_NOTE)
    assert new.is_a("consult-note") and new.is_a("documentreference")
    assert not old.is_a(LINK_APPOINTMENT) and not new.is_a(LINK_APPOINTMENT)


def test_an_appointment_link_is_recognised_in_any_case():
    assert Link("appointment", "Appointment/a1").is_a(LINK_APPOINTMENT)
    assert Link(LINK_APPOINTMENT, "Appointment/a1").is_a("appointment")
    assert not Link(LINK_APPOINTMENT, "Appointment/a1").is_a(LINK_CONSULT_NOTE)
    assert not Link("communication", "Communication/c1").is_a(LINK_CONSULT_NOTE)
