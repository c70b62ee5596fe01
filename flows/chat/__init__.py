"""What users read: the sentences of the chat and the CLI, kept apart from the logic."""
