"""Encore's chat front ends (Telegram, Discord): parse commands, submit jobs, show progress.

They import only `flows`' submission and query API.
"""
