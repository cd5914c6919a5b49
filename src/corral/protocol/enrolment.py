"""Worker enrolment with a certificate: a registration token for a key, a CSR for it, a
certificate signed by the coordinator's internal CA, renewed before it ends."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, Field

from corral.protocol._wire import Wire

__all__ = ["MAX_CSR_CHARS", "CertificateRequest", "Enrolled", "RegistrationIssued"]

MAX_CSR_CHARS = 4096  # an Ed25519 CSR in PEM is about 400 characters


class RegistrationIssued(BaseModel):
    token: str = Field(description="single use, shown only once")
    name: str = Field(description="the worker it enrols")
    expires_at: datetime


class CertificateRequest(Wire):
    csr: Annotated[str, Field(min_length=1, max_length=MAX_CSR_CHARS)] = Field(
        description="PEM PKCS#10 for the worker's own Ed25519 key"
    )


class Enrolled(BaseModel):
    worker_id: str
    name: str
    certificate: str = Field(description="PEM, bound to the worker and its tenant")
    ca_certificate: str = Field(description="PEM of the CA that signed it")
    expires_at: datetime
    server_time: datetime = Field(
        description="the coordinator's clock, for signing within its window"
    )
