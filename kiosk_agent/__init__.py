"""Kiosk-side My Number card agent.

Runs on the kiosk PC next to the reader, talks PC/SC (pyscard) to the card and plain
HTTP on loopback to the kiosk page in the same machine's browser. It imports nothing
from the server packages: the kiosk PC does not carry them.
"""
