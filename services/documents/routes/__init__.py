"""The HTTP API: `/documents` and the reference file API `/files`, over the same store."""

from fastapi import APIRouter

from services.documents.routes import documents, files

routers: list[APIRouter] = [documents.router, files.router]
