package main

import "fmt"

// fdsPerObject is about how many file descriptors one open object holds
// (its database, its WAL and its shared memory file); fdsBeside is room
// for everything else (sockets, NATS, the node index).
const (
	fdsPerObject = 3
	fdsBeside    = 1024
)

// fileLimitWarning returns what to tell the operator when limit, the
// process's open-file limit, is too low for maxOpen objects (--max-open)
// and the sockets beside them, or "" when it is not. Past the limit,
// waking a session or accepting a connection fails ("too many open
// files") under load.
func fileLimitWarning(limit uint64, maxOpen int) string {
	need := uint64(maxOpen)*fdsPerObject + fdsBeside
	if limit >= need {
		return ""
	}
	return fmt.Sprintf("the open-file limit (ulimit -n) is %d, and --max-open %d needs about %d (%d a database, and room for connections): raise the limit or lower --max-open, or requests will fail with \"too many open files\" under load",
		limit, maxOpen, need, fdsPerObject)
}
