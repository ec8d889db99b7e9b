package walvfs

// Writes returns how many writes of WAL files reached the default VFS.
func Writes() int64 { return writes.Load() }
