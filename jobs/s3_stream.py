"""A streamed S3 object whose multipart part size grows with it (storage's `open_write`).

S3 takes at most `S3_MAX_PARTS` (10,000) parts per object, and a stream does not know its size
in advance, so a fixed part size caps the object (16 MiB parts: 160 GiB) and the 10,001st part
fails the whole upload. `GrowingS3File` is s3fs's `S3File` (its buffering, retries, one PUT for
a stream shorter than one part, abort on `discard`) with one change: after each part it sets its
part size (`blocksize`) to `part_size(...)`: the start size for the first `step` parts
(`GROWTH_STEP`, 1000), then doubled every `step` parts, never above S3's largest part
(`PART_MAX`, 5 GiB). A small stream keeps the start size (and its memory: the writer holds
about 3.5 parts, measured); a long one reaches S3's 5 TiB object cap long before the part cap
(16 MiB start: 10,000 parts hold ~13 TiB, 15.6 GiB go in 16 MiB parts, 160 GiB end in 128 MiB
parts). The size never exceeds the bytes already sent: s3fs sends a stream shorter than one
part as one PUT at close, judged by the part size, so a size above what was sent would drop the
parts before it.

A filesystem made with `fixed_upload_size=True` (Cloudflare R2: every part but the last of one
size) keeps the start size: its streams stay capped at 10,000 parts of it.
"""

from __future__ import annotations

from typing import Any

from s3fs.core import S3File, S3FileSystem

S3_MAX_PARTS = 10_000  # parts per object
PART_MAX = S3File.part_max  # 5 GiB: S3's largest part
GROWTH_STEP = 1000  # parts sent at each part size before it doubles


def part_size(parts: int, sent: int, *, start: int, step: int = GROWTH_STEP) -> int:
    """The size of the next part of a stream that sent `parts` parts (`sent` bytes): `start`
    doubled once per `step` parts sent, at most PART_MAX and at most `sent` (module
    docstring)."""
    if parts <= 0:
        return start
    return max(start, min(start << min(parts // step, 32), PART_MAX, sent))


class GrowingS3File(S3File):
    """s3fs's S3File writing one object whose part size grows by `part_size`."""

    def __init__(self, fs: S3FileSystem, path: str, *, start: int, step: int | None = None,
                 **kwargs: Any) -> None:
        super().__init__(fs, path, "wb", block_size=start, **kwargs)
        self.start, self.step = start, GROWTH_STEP if step is None else step

    def _upload_chunk(self, final: bool = False) -> bool:
        done = super()._upload_chunk(final=final)
        if not final and self.parts and not getattr(self.fs, "fixed_upload_size", False):
            self.blocksize = part_size(len(self.parts), self.offset, start=self.start,
                                       step=self.step)
        return done

    def discard(self) -> None:
        """Abort the upload; the file is closed (s3fs's would try to send its tail when it is
        garbage-collected)."""
        super().discard()
        self.closed = True


def open_growing(fs: S3FileSystem, path: str, *, start: int,
                 step: int | None = None) -> GrowingS3File:
    """`path` (bucket/key) open for writing as `fs.open(path, "wb")` opens it (the filesystem's
    ACL, extra request arguments and requester-pays setting), in parts that grow from `start`
    (doubled every `step` parts, `GROWTH_STEP` unless given)."""
    extra = dict(fs.s3_additional_kwargs)
    return GrowingS3File(fs, path, start=start, step=step,
                         acl=extra.get("ACL") or extra.get("acl") or False,
                         s3_additional_kwargs=extra, requester_pays=fs.requester_pays)
