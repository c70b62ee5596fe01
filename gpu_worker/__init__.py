"""Encore's audio and ML engine: decode/encode, separation, voice conversion, remix.

It imports nothing of Encore's other packages, nor Prefect, boto3, a database or a bot
library. Functions take local paths and plain options and return local paths and plain data.
"""
