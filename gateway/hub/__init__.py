"""The level above the gateways: one hub for a compound, a community or a subdistrict."""
