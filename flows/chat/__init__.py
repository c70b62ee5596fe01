"""The chat side of Encore: what chat users read (`text`)."""
