"""The `arkq` command, on top of everything else: it may import any layer, and nothing imports it."""
