package natsbus_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"sessiond/objects/natsbus"
)

// childServer is a nats-server in a separate process: this test binary
// started with envServer=1 (see runChildServer in main_test.go).
type childServer struct {
	cmd    *exec.Cmd
	url    string
	exited chan struct{} // closed once cmd.Wait has returned
	stderr *lockedBuffer
}

// urlWriter is the child's stdout: it passes on the URL line.
type urlWriter struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	urls chan string
	sent bool
}

func (w *urlWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if !w.sent {
		for line := range strings.Lines(w.buf.String()) {
			if u, ok := strings.CutPrefix(strings.TrimSpace(line), urlLinePrefix); ok && strings.HasSuffix(line, "\n") {
				w.urls <- u
				w.sent = true
				break
			}
		}
	}
	return len(p), nil
}

// startChild starts a server process on dir with env and waits until it
// reports its URL. The process is stopped when the test ends.
func startChild(tb testing.TB, dir string, env []string) *childServer {
	tb.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envServer+"=1", envDir+"="+dir)
	cmd.Env = append(cmd.Env, env...)
	out := &urlWriter{urls: make(chan string, 1)}
	c := &childServer{cmd: cmd, exited: make(chan struct{}), stderr: &lockedBuffer{}}
	cmd.Stdout, cmd.Stderr = out, c.stderr
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start server process: %v", err)
	}
	go func() {
		defer close(c.exited)
		_ = cmd.Wait()
	}()
	tb.Cleanup(c.stop)
	select {
	case c.url = <-out.urls:
	case <-c.exited:
		tb.Fatalf("server process exited: %v\n%s", cmd.ProcessState, c.stderr)
	case <-time.After(30 * time.Second):
		tb.Fatalf("server process did not report its URL\n%s", c.stderr)
	}
	return c
}

// stop ends the process gracefully (SIGTERM, so the store is flushed) and
// waits for it.
func (c *childServer) stop() {
	select {
	case <-c.exited:
		return
	default:
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.exited:
	case <-time.After(20 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.exited
	}
}

// crash kills the process with SIGKILL and waits for it.
func (c *childServer) crash() {
	_ = c.cmd.Process.Kill()
	<-c.exited
}

// testPKI is a CA with a server certificate for 127.0.0.1 and a client
// certificate, as PEM files.
type testPKI struct {
	caFile, serverCert, serverKey, clientCert, clientKey string
}

func newTestPKI(tb testing.TB) testPKI {
	tb.Helper()
	dir := tb.TempDir()
	write := func(name, typ string, der []byte) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			tb.Fatal(err)
		}
		return path
	}
	newKey := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			tb.Fatal(err)
		}
		return k
	}
	keyDER := func(k *ecdsa.PrivateKey) []byte {
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			tb.Fatal(err)
		}
		return der
	}
	now := time.Now()
	caKey := newKey()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "natsbus test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		tb.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		tb.Fatal(err)
	}
	leaf := func(serial int64, usage x509.ExtKeyUsage) ([]byte, *ecdsa.PrivateKey) {
		k := newKey()
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial),
			Subject:      pkix.Name{CommonName: "natsbus test"},
			NotBefore:    now.Add(-time.Hour),
			NotAfter:     now.Add(time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{usage},
			IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
		if err != nil {
			tb.Fatal(err)
		}
		return der, k
	}
	srvDER, srvKey := leaf(2, x509.ExtKeyUsageServerAuth)
	cliDER, cliKey := leaf(3, x509.ExtKeyUsageClientAuth)
	return testPKI{
		caFile:     write("ca.pem", "CERTIFICATE", caDER),
		serverCert: write("server.pem", "CERTIFICATE", srvDER),
		serverKey:  write("server-key.pem", "PRIVATE KEY", keyDER(srvKey)),
		clientCert: write("client.pem", "CERTIFICATE", cliDER),
		clientKey:  write("client-key.pem", "PRIVATE KEY", keyDER(cliKey)),
	}
}

// externalServer is a server process that requires TLS with a client
// certificate and a user/password, as a production deployment would.
type externalServer struct {
	dir   string
	pki   testPKI
	env   []string
	child *childServer
}

const (
	testUser     = "sessiond"
	testPassword = "s3cret"
)

func startExternal(tb testing.TB) *externalServer {
	tb.Helper()
	s := &externalServer{dir: tb.TempDir(), pki: newTestPKI(tb)}
	s.env = []string{
		envUser + "=" + testUser, envPass + "=" + testPassword,
		envTLSCert + "=" + s.pki.serverCert, envTLSKey + "=" + s.pki.serverKey, envTLSCA + "=" + s.pki.caFile,
	}
	s.child = startChild(tb, s.dir, s.env)
	return s
}

// options are the client settings that satisfy the server.
func (s *externalServer) options() natsbus.ExternalOptions {
	return natsbus.ExternalOptions{
		URL:         s.child.url,
		User:        testUser,
		Password:    testPassword,
		TLSCAFile:   s.pki.caFile,
		TLSCertFile: s.pki.clientCert,
		TLSKeyFile:  s.pki.clientKey,
		Name:        "natsbus-test",
	}
}

func (s *externalServer) connect(tb testing.TB) *nats.Conn {
	tb.Helper()
	nc, err := natsbus.ConnectExternal(testCtx(tb), s.options())
	if err != nil {
		tb.Fatalf("ConnectExternal: %v", err)
	}
	tb.Cleanup(nc.Close)
	return nc
}

func newExternalHarness(tb testing.TB) *harness {
	s := startExternal(tb)
	return &harness{
		connect: s.connect,
		restart: func(tb testing.TB) {
			s.child.stop()
			s.child = startChild(tb, s.dir, s.env)
		},
	}
}

func TestExternal(t *testing.T) {
	checkNoLeaks(t)
	runSuite(t, newExternalHarness)
}

// A publish acknowledged before the server process is killed (SIGKILL, no
// chance to flush) is still there after it restarts: the acknowledgement
// waits for the write to the operating system.
func TestExternalCrashKeepsAcknowledgedPublishes(t *testing.T) {
	checkNoLeaks(t)
	s := startExternal(t)
	nc := s.connect(t)
	bus := openBus(t, nc, nil)
	var want []string
	for _, id := range []string{"c1", "c2", "c3"} {
		publish(t, bus, "ev.crash", id)
		want = append(want, id)
	}
	bus.Close()
	nc.Close()

	s.child.crash()
	s.child = startChild(t, s.dir, s.env)

	bus = openBus(t, s.connect(t), nil)
	var r recorder
	consume(t, bus, "worker", &r, nil)
	checkFor(t, 20*time.Second, "3 messages", func() bool { return len(r.got()) >= 3 })
	if got := ids(r.got()); !slices.Equal(got, want) {
		t.Fatalf("after crash handled %v, want %v", got, want)
	}
}

// The server refuses clients without the credentials or the client
// certificate it requires, so the options above are what made it work.
func TestConnectExternalRefused(t *testing.T) {
	checkNoLeaks(t)
	s := startExternal(t)
	for _, tc := range []struct {
		name   string
		change func(*natsbus.ExternalOptions)
	}{
		{"wrong password", func(o *natsbus.ExternalOptions) { o.Password = "wrong" }},
		{"no client certificate", func(o *natsbus.ExternalOptions) { o.TLSCertFile, o.TLSKeyFile = "", "" }},
		{"unknown CA", func(o *natsbus.ExternalOptions) { o.TLSCAFile = "" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := s.options()
			tc.change(&o)
			nc, err := natsbus.ConnectExternal(testCtx(t), o)
			if err == nil {
				nc.Close()
				t.Fatal("ConnectExternal succeeded")
			}
		})
	}
}

func TestConnectExternalInvalidOptions(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts natsbus.ExternalOptions
	}{
		{"no url", natsbus.ExternalOptions{}},
		{"creds and user", natsbus.ExternalOptions{URL: "nats://x", CredsFile: "c", User: "u"}},
		{"user and token", natsbus.ExternalOptions{URL: "nats://x", User: "u", Token: "t"}},
		{"password alone", natsbus.ExternalOptions{URL: "nats://x", Password: "p"}},
		{"cert without key", natsbus.ExternalOptions{URL: "nats://x", TLSCertFile: "c"}},
		{"key without cert", natsbus.ExternalOptions{URL: "nats://x", TLSKeyFile: "k"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := natsbus.ConnectExternal(testCtx(t), tc.opts)
			if !errors.Is(err, natsbus.ErrInvalidOptions) {
				t.Fatalf("err=%v, want ErrInvalidOptions", err)
			}
		})
	}
}
