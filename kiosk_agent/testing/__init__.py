"""Test helpers shared by tests/card and bench/card_read.py: an emulated My Number card
speaking vsmartcard's vpcd protocol, and a private pcscd + vpcd stack.

Nothing here is used by the agent at run time.
"""
