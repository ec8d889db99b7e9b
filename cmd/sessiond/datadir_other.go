//go:build !unix || aix || solaris

package main

import "os"

// lockData does nothing where flock(2) is missing: running two sessiond
// on one data folder is then not prevented.
func lockData(dir string) (unlock func(), err error) {
	return func() {}, nil
}

// privateFiles does nothing here: there is no umask.
func privateFiles() {}

// folderMode is the mode of the data folder's missing parents.
func folderMode() os.FileMode { return 0o755 }
