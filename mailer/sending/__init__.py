"""Sending: a campaign goes out in batches, from the queue or inline, on a schedule."""
