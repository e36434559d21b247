"""The defaults of `designs review` (pipeline/views/review.py), apart so the CLI's parser reads
them without importing Starlette."""

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
DEFAULT_REVIEWER = "reviewer"
