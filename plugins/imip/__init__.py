"""iMIP: iTIP messages carried by email (RFC 6047)."""
