"""Bounces and complaints: VERP, reading reports, the bounce mailbox on a real Dovecot."""
