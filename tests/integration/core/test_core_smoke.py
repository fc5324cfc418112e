from referrals.model import Command, Referral, new_referral_id
from refloop.services import Services


def test_open_and_accept(services: Services) -> None:
    referral, created = services.referrals.open(
        Referral(id=new_referral_id(), source_key="t|ServiceRequest/1",
                 service_request="ServiceRequest/1", patient="Patient/1"), Command("detect"))
    assert created
    accepted = services.referrals.act(referral.id, Command("accept"))
    assert accepted.stage.value == "accepted"
    assert services.store.task(referral.id)["status"] == "accepted"
