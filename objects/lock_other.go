//go:build !unix || aix || solaris

package objects

// lockDir takes no lock where flock(2) is missing: running two runtimes on
// one folder there is the caller's to prevent.
func lockDir(dir string) (unlock func(), err error) { return func() {}, nil }
