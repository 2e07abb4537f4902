"""Webhook endpoints, signed delivery of every domain event, retries, attempt log, replay."""
