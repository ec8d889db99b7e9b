package objects_test

import (
	"os"
	"testing"
)

// TestMain runs the test binary as a helper process when asked to by an
// environment variable (the SIGKILL test's victim, the socket benchmark's
// clients), and runs the tests otherwise.
func TestMain(m *testing.M) {
	if dir := os.Getenv(crashChildEnv); dir != "" {
		crashChild(dir) // never returns: the parent kills it
	}
	if dir := os.Getenv(alarmChildEnv); dir != "" {
		alarmChild(dir) // never returns: the parent kills it
	}
	if url := os.Getenv(wsClientsEnv); url != "" {
		os.Exit(wsClients(url))
	}
	os.Exit(m.Run())
}
