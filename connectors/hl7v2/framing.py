"""MLLP framing: <VT> message <FS><CR>. Pure bytes in, frames out; it knows nothing of HL7.

The framer is fed whatever TCP delivers (half a frame, three frames, junk between them) and
returns complete frames. Bytes outside a frame are dropped and counted; a frame that grows past
`max_size` is abandoned (reported once, then skipped to the next start block); a start block
inside an unfinished frame abandons the unfinished one."""
from __future__ import annotations

from dataclasses import dataclass, field

START = b"\x0b"
END = b"\x1c\x0d"
DEFAULT_MAX_SIZE = 1024 * 1024


def frame(message: bytes) -> bytes:
    """Wrap one message in an MLLP block."""
    return START + message + END


@dataclass(slots=True)
class Frames:
    """What one feed produced: complete frames, frames abandoned (with why), junk dropped."""
    messages: list[bytes] = field(default_factory=list)
    abandoned: list[tuple[bytes, str]] = field(default_factory=list)  # (head of the frame, reason)
    junk_bytes: int = 0


@dataclass(slots=True)
class MllpFramer:
    max_size: int = DEFAULT_MAX_SIZE
    _buffer: bytearray = field(default_factory=bytearray)
    _in_frame: bool = False
    _oversized: bool = False

    def feed(self, data: bytes) -> Frames:
        """Add bytes from the stream; return every frame they complete."""
        out = Frames()
        buf = self._buffer
        buf += data
        while buf:
            if not self._in_frame:
                start = buf.find(START)
                if start < 0:
                    out.junk_bytes += len(buf)
                    buf.clear()
                    break
                out.junk_bytes += start
                del buf[:start + 1]
                self._in_frame, self._oversized = True, False
                continue
            end = buf.find(END)
            restart = buf.find(START)
            if restart >= 0 and (end < 0 or restart < end):
                if not self._oversized:
                    out.abandoned.append((bytes(buf[:restart]), "a new start block arrived before the end block"))
                del buf[:restart]
                self._in_frame = False
                continue
            if end < 0:
                if len(buf) > self.max_size:
                    if not self._oversized:
                        out.abandoned.append((bytes(buf[:4096]), "too-large"))
                    self._oversized = True
                    del buf[:-1]  # keep a trailing FS: it may be half of the end block
                break
            if self._oversized:
                self._oversized = False
            elif end > self.max_size:
                out.abandoned.append((bytes(buf[:min(end, 4096)]), "too-large"))
            else:
                out.messages.append(bytes(buf[:end]))
            del buf[:end + len(END)]
            self._in_frame = False
        return out

    @property
    def pending(self) -> int:
        """Bytes held in an unfinished frame."""
        return len(self._buffer) if self._in_frame else 0
