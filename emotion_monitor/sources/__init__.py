"""Live post sources: each runs as its own process (``emotion-monitor source bluesky|mastodon|jsonl``) and writes
posts to the ``posts`` topic at-least-once, resuming from a checkpoint in Redis. See :mod:`.base`."""
