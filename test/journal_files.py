"""Reads the worker's write-ahead journal (DATADIR/voipbin_journal) from the
outside, as the durability tests inspect it: its segment files' records and
how far the table has stored them."""
import glob
import os
import struct

HDR = struct.Struct("<IIIBBHQq")      # magic crc len flags source pad orig_len at_us
META = struct.Struct("<IIQQQ40sII")   # magic version dir_ino file_ino reserved id pad crc
REC_MAGIC = 0x4a4e4256


def journal_dir(cluster):
    return os.path.join(cluster.data, "voipbin_journal")


def journal_id(cluster):
    with open(os.path.join(journal_dir(cluster), "journal.meta"), "rb") as f:
        return META.unpack(f.read(META.size))[5].split(b"\0")[0].decode()


def records(cluster):
    """Every whole record in the journal's segment files: (position, end, flags, data)."""
    out = []
    for path in sorted(glob.glob(os.path.join(journal_dir(cluster), "*.seg"))):
        base = int(os.path.basename(path)[:16], 16)
        with open(path, "rb") as f:
            buf = f.read()
        off = 0
        while off + HDR.size <= len(buf):
            magic, _crc, n, flags, _src, _pad, _orig, _at = HDR.unpack_from(buf, off)
            if magic != REC_MAGIC or off + HDR.size + n > len(buf):
                break
            out.append((base + off, base + off + HDR.size + n, flags,
                        buf[off + HDR.size:off + HDR.size + n]))
            off += HDR.size + n
    return out


def stored_upto(cluster):
    row = cluster.query_one("SELECT stored_upto FROM voipbin_journal WHERE journal_id = %s",
                            (journal_id(cluster),))
    return row[0] if row else 0


def unstored(cluster):
    upto = stored_upto(cluster)
    return [r for r in records(cluster) if r[0] >= upto]


def segment_bytes(cluster):
    return sum(os.path.getsize(p) for p in glob.glob(os.path.join(journal_dir(cluster), "*.seg")))
