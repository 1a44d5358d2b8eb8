"""Self-hosted newsletter delivery: a weekly Markdown post to every subscriber, once, on time.

The sub-packages are the pipeline's stages: ``content`` (post → edition), ``store``
(tables, the ledger), ``tracking`` (links, events, providers' webhooks), ``delivery``
(backends), ``sending`` (campaigns in batches), ``web`` and ``cli``.
"""
