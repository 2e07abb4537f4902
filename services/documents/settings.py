from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from services.documents.content_types import ALLOWED
from shared.registry import DOCUMENTS
from shared.settings import ServiceSettings

MiB = 1024 * 1024


class DocumentsSettings(ServiceSettings):
    service_name: str = DOCUMENTS.name
    port: int = DOCUMENTS.port

    # The largest file one upload stores; past it the upload ends with 413 while streaming.
    documents_max_bytes: int = Field(default=100 * MiB, ge=1)
    # What one user may store in all (0: no quota).
    documents_user_quota_bytes: int = Field(default=1024 * MiB, ge=0)
    # Comma-separated types taken (of PDF, text, Markdown, HTML, DOCX, CSV, JSON).
    documents_allowed_types: str = ",".join(sorted(ALLOWED))

    # `local`: files under DOCUMENTS_LOCAL_ROOT (default `<VAR_DIR>/documents`); `s3`: any
    # S3-compatible bucket.
    documents_storage: Literal["local", "s3"] = "local"
    documents_local_root: Path | None = None
    s3_endpoint_url: str | None = None
    s3_bucket: str = "lyceum-documents"
    s3_access_key_id: str | None = None
    s3_secret_access_key: str | None = None
    s3_region: str = "us-east-1"
    # Size of the parts of a multipart upload (S3 takes 5 MiB and more).
    s3_part_size_bytes: int = Field(default=8 * MiB, ge=5 * MiB)

    # The budget of one document's text extraction; past it the document ends `failed`.
    documents_extraction_seconds: float = Field(default=60.0, gt=0)
    documents_extraction_max_pages: int = Field(default=2000, ge=1)
    documents_extraction_max_chars: int = Field(default=5_000_000, ge=1)
    # DOCX (a zip): the most its parts may inflate to, and the largest ratio allowed.
    documents_extraction_max_inflated_bytes: int = Field(default=200 * MiB, ge=1)
    documents_extraction_max_ratio: float = Field(default=100.0, gt=1)
    # How many documents are extracted at the same time by one process.
    documents_extraction_concurrency: int = Field(default=1, ge=1)
    documents_chunk_chars: int = Field(default=1500, ge=200)
    documents_chunk_overlap_chars: int = Field(default=200, ge=0)

    @field_validator("s3_endpoint_url", "s3_access_key_id", "s3_secret_access_key")
    @classmethod
    def _empty_is_unset(cls, value: str | None) -> str | None:
        """An empty value (a ConfigMap key left blank) means the default: AWS itself, or
        the credentials of the environment (instance role, AWS_* variables)."""
        return value.strip() or None if value is not None else None

    @property
    def local_root(self) -> Path:
        return self.documents_local_root or self.var_dir / "documents"

    @property
    def allowed_types(self) -> frozenset[str]:
        return frozenset(t.strip() for t in self.documents_allowed_types.split(",") if t.strip())

    @property
    def max_upload_body_bytes(self) -> int:
        """The multipart body of an upload: the file plus room for the form's headers and
        fields."""
        return self.documents_max_bytes + MiB
