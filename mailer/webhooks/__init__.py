"""Providers' event webhooks: each a ``verify`` of the raw request and a ``parse`` into Events.

Verification comes first and is over the raw body; nothing is parsed, stored or
changed for a request that fails it.
"""
