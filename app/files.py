"""Files from the artifact store as HTTP answers, opened before the answer starts.

Why: cleanup removes an expired row (leaving its tombstone), then its files. A request that read
the row just before could find the file gone when Starlette's ``FileResponse`` opened it, which
it does lazily, after the route returned: the check the route made no longer held, and the
answer was a 500. An open file stays readable after its name is removed (POSIX), so opening it
in the route closes that window: either the route gets the file and sends all of it, or it
answers the problem the caller gives (410 with the tombstone's time, where there is one).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO, Callable, Iterator, Optional

from fastapi.responses import StreamingResponse

CHUNK = 1 << 16


def open_file(path: Path, media_type: str, missing: Callable[[], Exception],
              headers: Optional[dict[str, str]] = None) -> StreamingResponse:
    """The file at ``path`` as the answer (with its Content-Length), or ``missing()`` raised
    when there is no such file."""
    try:
        f = open(path, "rb")
    except (FileNotFoundError, NotADirectoryError):
        raise missing() from None
    size = os.fstat(f.fileno()).st_size
    return StreamingResponse(_chunks(f), media_type=media_type,
                             headers={**(headers or {}), "Content-Length": str(size)})


def _chunks(f: BinaryIO) -> Iterator[bytes]:
    with f:
        while chunk := f.read(CHUNK):
            yield chunk
