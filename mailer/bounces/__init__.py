"""What comes back from the mailbox providers: bounces (DSNs) and complaints (ARF reports).

A message goes out with a return address of its own (``verp``), so whatever comes back
names its delivery. ``report`` reads one returned message into a ``Report``; ``ingest``
finds its delivery and records it as the same event a provider's webhook would;
``mailbox`` reads the bounce mailbox over IMAP and files each message away.
"""
