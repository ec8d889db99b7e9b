// Package heapfloor keeps the garbage collector's heap goal at or above a
// floor while the process is busy and its live heap small.
//
// Go collects when the heap has grown by GOGC percent over what the last
// collection found live. A server whose live heap is a few dozen MiB but
// which allocates a hundred MiB a second (short requests) then collects
// several times a second, each time scanning the same live heap. A floor
// lets such a heap grow to the floor before it is collected: fewer
// collections for the same garbage. A live heap above half the floor is
// left to GOGC alone, so a node holding much costs what it would without
// the floor.
//
// The goal is recomputed after every collection the runtime starts on its
// own, from the live heap that collection measured, by raising the GC
// percentage (debug.SetGCPercent). While it is raised, a timer looks once a
// second at how much was allocated since its last look; when that is a
// small part of the floor (the load has stopped), the percentage goes back
// to GOGC's and the memory the floor let the heap take is returned to the
// operating system, so a quiet process holds what it would hold without
// the floor. GOMEMLIMIT still bounds the heap as usual.
package heapfloor
