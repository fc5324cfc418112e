"""HL7 v2 bridge: MLLP listener, normaliser, lean parser, ACKs, v2 -> FHIR maps, outbound v2."""
