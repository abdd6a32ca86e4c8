"""Errors the broker returns, as exceptions that carry its stable `reason`.

The broker puts a `google.rpc.ErrorInfo` (domain `tableau-token-broker`, a `reason` such as
`SCOPE_NOT_ALLOWED`, Tableau's codes in `metadata`) and, when it or Tableau gave a hint, a
`google.rpc.RetryInfo` in the status details (`grpc-status-details-bin`). The README's table of
reasons says what each one means.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

import grpc
from google.rpc import error_details_pb2, status_pb2

__all__ = ["BrokerError", "ConfigurationError", "from_rpc_error"]

_DETAILS_KEY = "grpc-status-details-bin"


class BrokerError(Exception):
    """A call to the broker failed.

    `code` is the gRPC status code, `reason` the broker's stable reason (`ErrorInfo.reason`,
    `None` when the error did not come from the broker, e.g. a connection failure), `message`
    the broker's text, `metadata` the `ErrorInfo` metadata (`tableau_code`, `tableau_sub_code`)
    and `retry_delay` the `RetryInfo` hint in seconds, if any.
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        reason: Optional[str] = None,
        metadata: Optional[Dict[str, str]] = None,
        retry_delay: Optional[float] = None,
    ) -> None:
        self.code = code
        self.message = message
        self.reason = reason
        self.metadata: Dict[str, str] = dict(metadata or {})
        self.retry_delay = retry_delay
        super().__init__(str(self))

    @property
    def code_name(self) -> str:
        """The status code as the gRPC spec names it ("PERMISSION_DENIED")."""
        return self.code.name if isinstance(self.code, grpc.StatusCode) else str(self.code)

    def __str__(self) -> str:
        reason = f" ({self.reason})" if self.reason else ""
        return f"{self.code_name}{reason}: {self.message}"

    def __repr__(self) -> str:
        return f"BrokerError(code={self.code_name}, reason={self.reason!r}, message={self.message!r})"


class ConfigurationError(ValueError):
    """The client cannot be set up: a missing environment variable or unreadable file."""


def _status_from_trailers(trailing: Any) -> Optional[status_pb2.Status]:
    for key, value in trailing or ():
        if key == _DETAILS_KEY:
            status = status_pb2.Status()
            try:
                status.ParseFromString(value)
            except Exception:  # a malformed trailer: treat as absent
                return None
            return status
    return None


def from_rpc_error(err: grpc.RpcError) -> BrokerError:
    """The `BrokerError` for a failed call (sync `grpc.RpcError` or `grpc.aio.AioRpcError`)."""
    code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
    message = (err.details() if hasattr(err, "details") else None) or str(err)
    trailing = err.trailing_metadata() if hasattr(err, "trailing_metadata") else None
    reason = None
    metadata: Dict[str, str] = {}
    retry_delay = None
    status = _status_from_trailers(trailing)
    if status is not None:
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                reason = info.reason or None
                metadata = dict(info.metadata)
            elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                retry = error_details_pb2.RetryInfo()
                detail.Unpack(retry)
                if retry.HasField("retry_delay"):
                    retry_delay = retry.retry_delay.ToTimedelta().total_seconds()
    return BrokerError(code, message, reason, metadata, retry_delay)
