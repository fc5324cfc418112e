"""The SMART tests' EHR is the demo EHR (refloop/demo_ehr.py), strict by construction; its modes
flip one behaviour at a time for the negative tests."""

from refloop.demo_ehr import DemoEhr as StrictEhr
from refloop.demo_ehr import Modes

__all__ = ["Modes", "StrictEhr"]
