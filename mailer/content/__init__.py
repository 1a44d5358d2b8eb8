"""Content: a Markdown post with its front matter becomes an edition (subject, HTML, text)."""
