"""What users read about how a result was marked and made: the a cappella note, the six
stems file name, and `encore verify`'s verdicts on a file's tags and Content Credentials."""

from __future__ import annotations

A_CAPPELLA = "This song is a cappella, so it was not separated: the voice sang the whole recording."
SIX_STEMS = "six stems"

UNMARKED = (
    "Unmarked: this file carries no Content Credentials (it was never marked, or it was "
    "re-encoded or edited since)."
)
NO_PLACE = (
    "Unmarked: this format cannot carry Content Credentials; only its tags can say what it is."
)
TAMPERED = "Content Credentials present, but the file was changed after it was signed ({why})."
SIGNED = "Content Credentials: signed by {signer} ({issuer}); the signature holds."
UNTRUSTED = "The signing certificate is not from a CA that C2PA validators trust (a self-made one)."
TRUSTED = "The signing certificate chains to a trusted CA."
AI_DECLARED = "It declares itself AI-generated (IPTC trainedAlgorithmicMedia)."
NOT_AI_DECLARED = "Its manifest does not declare it AI-generated."
INGREDIENTS = "Made from: {ingredients}."
TAGS_AI = "Its tags say it is an AI-generated cover of {source}, sung by the voice {voice}."
TAGS_OTHER = "Its tags: {title} by {artist}."
NO_TAGS = "It has no tags."
