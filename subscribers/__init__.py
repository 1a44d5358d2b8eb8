"""The subscriber store: who gets the newsletter, with consent, and who must never get it again."""
