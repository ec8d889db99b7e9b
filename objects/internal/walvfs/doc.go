// Package walvfs is a SQLite VFS that writes each transaction's WAL frames
// in one system call.
//
// SQLite appends a frame to its write-ahead log in two writes (its 24-byte
// header, then the page), so a commit of n pages costs 2n pwrite(2) calls;
// a 32 MiB row, 16,000. This VFS is the default one (SQLite's own, found at
// Register) with the write path of WAL files wrapped: frames appended at the
// end of the log are held in memory and written in one call when the page
// of the commit frame arrives, that is before xWrite returns to SQLite for
// the transaction's last frame, so before any COMMIT can return and before
// the WAL index says the frames exist. Held bytes are also written first
// whenever anything else touches the file (a read, a sync, its size, a
// truncation, a file control, a lock, closing it), when more than 1 MiB is
// held (a transaction larger than the page cache spills frames early), and
// a write that is not an append at the end of the log (the WAL header at
// offset 0, checksums rewritten in earlier frames, a page rewritten in
// place) goes after them, at once. What a crash loses is therefore what it
// lost before: frames of a transaction that had not committed.
//
// Database files, journals and the -shm file are not touched: only files
// SQLite opens with SQLITE_OPEN_WAL get the wrapped methods.
package walvfs
