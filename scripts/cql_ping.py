#!/usr/bin/env python3
"""cql_ping.py [HOST] [PORT] [--timeout SECONDS] -- is Cassandra really answering CQL?

Dependency-free: speaks the CQL native protocol v4 over a raw socket. Sends STARTUP
(CQL_VERSION 3.0.0) and expects READY, then QUERY "SELECT release_version FROM system.local"
at consistency ONE and expects a RESULT of kind Rows. Prints release_version and exits 0;
on anything else prints the reason on stderr and exits 1.
Defaults: 127.0.0.1, $CASSANDRA_PORT or 9042, 5 seconds.
"""
import argparse
import os
import socket
import struct
import sys

PROTOCOL_VERSION = 0x04
OP_ERROR, OP_STARTUP, OP_READY, OP_AUTHENTICATE, OP_QUERY, OP_RESULT = 0x00, 0x01, 0x02, 0x03, 0x07, 0x08
FLAG_COMPRESSION, FLAG_TRACING, FLAG_CUSTOM_PAYLOAD, FLAG_WARNING = 0x01, 0x02, 0x04, 0x08
RESULT_ROWS = 0x0002
CONSISTENCY_ONE = 0x0001
QUERY = "SELECT release_version FROM system.local"


class ProbeError(Exception):
    pass


class Reader:
    """Reads the protocol's [short], [int], [string], [bytes]... from a frame body."""

    def __init__(self, data):
        self.data, self.pos = data, 0

    def take(self, n):
        if self.pos + n > len(self.data):
            raise ProbeError("truncated frame body")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def short(self):
        return struct.unpack(">H", self.take(2))[0]

    def int(self):
        return struct.unpack(">i", self.take(4))[0]

    def string(self):
        return self.take(self.short()).decode("utf-8", "replace")

    def bytes(self):
        n = self.int()
        return None if n < 0 else self.take(n)

    def string_list(self):
        return [self.string() for _ in range(self.short())]

    def bytes_map(self):
        return {self.string(): self.bytes() for _ in range(self.short())}

    def skip_type(self):
        """Skips an [option] column type, including nested collection/UDT/tuple types."""
        kind = self.short()
        if kind == 0x0000:  # custom
            self.string()
        elif kind in (0x0020, 0x0022):  # list, set
            self.skip_type()
        elif kind == 0x0021:  # map
            self.skip_type()
            self.skip_type()
        elif kind == 0x0030:  # UDT
            self.string()
            self.string()
            for _ in range(self.short()):
                self.string()
                self.skip_type()
        elif kind == 0x0031:  # tuple
            for _ in range(self.short()):
                self.skip_type()


def pack_string(s, length_format=">H"):
    b = s.encode("utf-8")
    return struct.pack(length_format, len(b)) + b


def send_frame(sock, stream, opcode, body):
    sock.sendall(struct.pack(">BBhBi", PROTOCOL_VERSION, 0, stream, opcode, len(body)) + body)


def recv_exact(sock, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ProbeError("connection closed by the server")
        buf += chunk
    return bytes(buf)


def recv_frame(sock):
    """Returns (opcode, Reader positioned at the message body); raises on ERROR frames."""
    version, flags, _stream, opcode, length = struct.unpack(">BBhBi", recv_exact(sock, 9))
    reader = Reader(recv_exact(sock, length))
    if version != (0x80 | PROTOCOL_VERSION):
        raise ProbeError(f"unexpected response protocol version 0x{version:02x}")
    if flags & FLAG_COMPRESSION:
        raise ProbeError("compressed frame, but no compression was negotiated")
    if flags & FLAG_TRACING:
        reader.take(16)  # tracing session id
    if flags & FLAG_WARNING:
        reader.string_list()
    if flags & FLAG_CUSTOM_PAYLOAD:
        reader.bytes_map()
    if opcode == OP_ERROR:
        code = reader.int()
        raise ProbeError(f"server error 0x{code:04x}: {reader.string()}")
    return opcode, reader


def ping(host, port, timeout):
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        send_frame(sock, 1, OP_STARTUP, struct.pack(">H", 1) + pack_string("CQL_VERSION") + pack_string("3.0.0"))
        opcode, _ = recv_frame(sock)
        if opcode == OP_AUTHENTICATE:
            raise ProbeError("server requires authentication")
        if opcode != OP_READY:
            raise ProbeError(f"expected READY after STARTUP, got opcode 0x{opcode:02x}")

        # QUERY: [long string] query, [short] consistency, [byte] flags (none).
        send_frame(sock, 2, OP_QUERY, pack_string(QUERY, ">i") + struct.pack(">HB", CONSISTENCY_ONE, 0))
        opcode, r = recv_frame(sock)
        if opcode != OP_RESULT:
            raise ProbeError(f"expected RESULT, got opcode 0x{opcode:02x}")
        kind = r.int()
        if kind != RESULT_ROWS:
            raise ProbeError(f"expected a Rows result, got kind 0x{kind:04x}")

        # Rows metadata: flags, column count, [paging state], [global table spec], column specs.
        flags, columns = r.int(), r.int()
        if flags & 0x0002:
            r.bytes()
        if not flags & 0x0004:
            global_spec = flags & 0x0001
            if global_spec:
                r.string()
                r.string()
            for _ in range(columns):
                if not global_spec:
                    r.string()
                    r.string()
                r.string()
                r.skip_type()
        rows = [[r.bytes() for _ in range(columns)] for _ in range(r.int())]
        if not rows or columns < 1 or rows[0][0] is None:
            raise ProbeError("system.local returned no release_version")
        return rows[0][0].decode("utf-8")


def main():
    parser = argparse.ArgumentParser(description="Check that Cassandra answers a CQL query.")
    parser.add_argument("host", nargs="?", default="127.0.0.1")
    parser.add_argument("port", nargs="?", type=int, default=int(os.environ.get("CASSANDRA_PORT", "9042")))
    parser.add_argument("--timeout", type=float, default=5.0, help="socket timeout in seconds (default 5)")
    args = parser.parse_args()
    try:
        print(ping(args.host, args.port, args.timeout))
    except (OSError, ProbeError, struct.error, UnicodeDecodeError) as e:
        print(f"cql_ping: {args.host}:{args.port}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
