"""Tracking: links, opens and clicks, providers' events, and the figures made of them."""
