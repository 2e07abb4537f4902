"""Deployment files and the checks that they agree with the code (deploy/validate.sh)."""
