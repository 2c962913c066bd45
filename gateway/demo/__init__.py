"""`community-gateway demo`: the whole system on simulators (see gateway.demo.run)."""
