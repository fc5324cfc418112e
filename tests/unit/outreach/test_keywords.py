"""Opt-out, opt-in and HELP in patient replies (FCC 24-18 keywords, any case, punctuation,
extra words), and what is not an opt-out."""

from __future__ import annotations

import pytest

from outreach.keywords import HELP, OPT_IN, OPT_OUT, OPT_OUT_ALL, classify, intent

OPT_OUTS = ["STOP", "stop", "Stop.", "STOP!", " stop ", "STOPALL", "UNSUBSCRIBE",
            "unsubscribe", "CANCEL", "cancel", "END", "end.", "QUIT", "quit it", "REVOKE",
            "OPT OUT", "opt-out", "Opt out please", "OPTOUT", "stop texting me",
            "Stop sending me these", "STOP please!", "Please stop.", "please STOP now",
            "Remove me from this list", "do not text me again", "I want to opt out",
            "parar", "Alto", "\uff33\uff34\uff2f\uff30", "ST\u200bOP", "\ufeffstop"]
NOT_OPT_OUTS = ["don't stop", "do not stop", "Never stop", "can't stop",
                "cancel my appointment", "the end of the day works", "hello", "Yes",
                "I will not quit my job", "what time?", ""]


@pytest.mark.parametrize("text", OPT_OUTS)
def test_opt_out_variants(text: str) -> None:
    assert classify(text) in (OPT_OUT, OPT_OUT_ALL)


def test_stopall_opts_out_of_every_channel() -> None:
    assert classify("STOPALL") == OPT_OUT_ALL and classify("stop all") == OPT_OUT_ALL


@pytest.mark.parametrize("text", NOT_OPT_OUTS)
def test_words_that_are_not_opt_outs(text: str) -> None:
    assert classify(text) not in (OPT_OUT, OPT_OUT_ALL)


@pytest.mark.parametrize(("text", "kind"), [("START", OPT_IN), ("start", OPT_IN),
                                            ("UNSTOP", OPT_IN), ("Unstop!", OPT_IN),
                                            ("HELP", HELP), ("help?", HELP), ("INFO", HELP),
                                            ("ayuda", HELP)])
def test_opt_in_and_help(text: str, kind: str) -> None:
    assert classify(text) == kind


@pytest.mark.parametrize(("text", "wanted"), [
    ("BOOK", "book"), ("yes", "book"), ("I want to schedule", "book"), ("Sí", "book"),
    ("call me", "call-me"), ("Please call me after 5", "call-me"), ("llámame", "call-me"),
    ("cancel my appointment", "free-text"), ("who is this?", "free-text"),
    ("I already saw the doctor last week, thanks", "free-text")])
def test_intent_of_other_replies(text: str, wanted: str) -> None:
    assert intent(text) == wanted
