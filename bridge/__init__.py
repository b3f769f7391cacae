"""payment-webhook bridge: verify processor webhooks, map them, deliver them reliably."""

__version__ = "0.1.0"
