"""Pre-flight conformance check of PAS bundles against the IG's StructureDefinitions."""

from pas_client.conformance.check import check_bundle, check_resource
from pas_client.conformance.finding import Finding

__all__ = ["Finding", "check_bundle", "check_resource"]
