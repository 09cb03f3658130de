"""Upload of backups to S3-compatible storage (AWS S3, MinIO, ...), through boto3.

Objects are named ``<SCHEDULER_BACKUP_PREFIX>/<path under the backup directory>``, so the
bucket mirrors the local layout (the reference's ``snapshots/YYYY-MM-DD/HH-MM.db`` and
``rollups/YYYY-MM-DD/HH.db``). Credentials are boto3's own (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, which the daemon's settings read before it
clears them from its environment; else profiles, instance roles): never logged.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from scheduler.errors import SchedulerError
from scheduler.ops.backup import expired


class UploadError(SchedulerError):
    """The object store refused or could not be reached."""


class S3Uploader:
    def __init__(self, bucket: str, prefix: str, endpoint: str | None,
                 credentials: dict[str, str] | None = None) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint = endpoint or None
        # aws_access_key_id / aws_secret_access_key / aws_session_token when given; otherwise
        # boto3's own chain (shared credentials file, profile, instance role).
        self._credentials = dict(credentials or {})
        self._made: Any = None

    @property
    def _client(self) -> Any:
        """Made on first use, on the backup's worker thread: it takes boto3 a moment."""
        if self._made is None:
            import boto3  # only here: the optional extra [s3]

            self._made = self._call(boto3.client, "s3", endpoint_url=self.endpoint,
                                    **self._credentials)
        return self._made

    def key_for(self, relative: tuple[str, ...]) -> str:
        return "/".join((self.prefix, *relative)) if self.prefix else "/".join(relative)

    def upload(self, path: Path, relative: tuple[str, ...]) -> str:
        key = self.key_for(relative)
        self._call(self._client.upload_file, str(path), self.bucket, key)
        return key

    def prune(self, now: datetime, *, snapshot_hours: int, rollup_days: int) -> list[str]:
        """Delete the bucket's snapshots and rollups past retention, as the local prune does."""
        start = f"{self.prefix}/" if self.prefix else ""
        doomed = [key for key in self._keys(start)
                  if expired(tuple(key[len(start):].split("/")), now,
                             snapshot_hours=snapshot_hours, rollup_days=rollup_days)]
        for first in range(0, len(doomed), 1000):  # the API's batch limit
            batch = [{"Key": key} for key in doomed[first:first + 1000]]
            self._call(self._client.delete_objects, Bucket=self.bucket,
                       Delete={"Objects": batch, "Quiet": True})
        return doomed

    def _keys(self, start: str) -> list[str]:
        pages = self._call(self._client.get_paginator("list_objects_v2").paginate,
                           Bucket=self.bucket, Prefix=start)
        try:
            return [item["Key"] for page in pages for item in page.get("Contents", [])]
        except Exception as exc:
            raise UploadError(_describe(exc)) from None

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # botocore's errors share no base class with boto3's
            raise UploadError(_describe(exc)) from None


def _describe(exc: BaseException) -> str:
    return f"S3 upload failed ({type(exc).__name__}): {exc}"
