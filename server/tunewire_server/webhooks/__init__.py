"""Signed webhooks: job events delivered to operator-configured endpoints, per the Standard Webhooks spec.

endpoints.py checks the settings (URLs, the whsec_ secret); payloads.py maps a stored job event to the
OpenAI-shaped event deliveries enqueued with it (the outbox, in the store's transaction); signing.py signs
a delivery with the `standardwebhooks` package; backoff.py is the retry schedule; sender.py makes one HTTP
attempt; dispatcher.py claims due deliveries from the store and sends them, off the event loop.
"""
