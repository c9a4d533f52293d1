// Package kubetest is test support for the helm driver: a real Kubernetes
// API (kube-apiserver v1.34, built once by testdata/testbins/build.sh) on a
// real etcd (the Debian package), on loopback, with token authentication
// and RBAC, and kubeconfigs written for its users.
//
// No kubelet, scheduler or controller-manager runs: objects are stored and
// validated, pods never start, Deployments get no ReplicaSets and a deleted
// namespace stays Terminating. Tests check what the API stores.
//
// One API is shared by the tests of a package (it takes a few seconds to
// start and about 250 MB): call Shared(t) in each test and Main from
// TestMain, which stops it when the tests are done. Tests keep apart by
// the names they use (namespaces, cluster names).
package kubetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/agentproj/agent/drivers/etcd/etcdtest"
	"github.com/agentproj/agent/drivers/etcd/etcdtest/freeaddr"
	"github.com/agentproj/agent/drivers/etcd/etcdtest/poll"
	"github.com/agentproj/agent/drivers/process/processtest"
)

// Users of the API, each with its own bearer token. Admin is in
// system:masters; AgentA and AgentB are too (two agents with their own
// credentials); Nobody has no permission at all.
const (
	Admin  = "admin"
	AgentA = "agent-a"
	AgentB = "agent-b"
	Nobody = "nobody"
)

// API is a running kube-apiserver.
type API struct {
	// URL is https://127.0.0.1:<port>.
	URL string
	// CA verifies the server's certificate (it signs itself).
	CA     []byte
	tokens map[string]string
	dir    string
	stop   func()
}

var (
	sharedMu  sync.Mutex
	shared    *API
	sharedErr error
	// sharedBy are the tests that have used shared: a test asking again is
	// the next round of -count, which gets a new API, since what a round
	// leaves stays (no controller finalizes a deleted namespace).
	sharedBy = map[string]bool{}
)

// Chart is the absolute path of the project's test chart name
// (testdata/charts/<name>: small charts that stand in for upstream ones).
func Chart(name string) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "..", "testdata", "charts", name)
}

// Shared returns the package's API, starting it on first use and again
// for each round of go test -count. It fails the test when the API cannot
// start; a missing binary skips it (fails under CI=true), as
// processtest.Testbin says.
func Shared(t testing.TB) *API {
	t.Helper()
	etcdBin := etcdtest.RequireBinary(t, "etcd", "etcd-server")
	apiBin := processtest.Testbin(t, "kube-apiserver", "kube-apiserver")
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if sharedBy[t.Name()] {
		if shared != nil {
			shared.stop()
		}
		shared, sharedErr = nil, nil
		clear(sharedBy)
	}
	sharedBy[t.Name()] = true
	if shared == nil && sharedErr == nil {
		shared, sharedErr = start(etcdBin, apiBin)
	}
	if sharedErr != nil {
		t.Fatalf("kube-apiserver: %v", sharedErr)
	}
	return shared
}

// Start runs an API of the test's own, stopped when the test ends: for a
// package without a TestMain that calls Main.
func Start(t testing.TB) *API {
	t.Helper()
	etcdBin := etcdtest.RequireBinary(t, "etcd", "etcd-server")
	apiBin := processtest.Testbin(t, "kube-apiserver", "kube-apiserver")
	a, err := start(etcdBin, apiBin)
	if err != nil {
		t.Fatalf("kube-apiserver: %v", err)
	}
	t.Cleanup(a.stop)
	return a
}

// Main runs the tests and then stops the shared API: call it from
// TestMain as os.Exit(kubetest.Main(m)).
func Main(m *testing.M) int {
	code := m.Run()
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if shared != nil {
		shared.stop()
		shared = nil
	}
	return code
}

// start runs etcd and kube-apiserver on free loopback ports under a new
// temporary directory and returns once the API is ready (/readyz).
func start(etcdBin, apiBin string) (_ *API, err error) {
	dir, err := os.MkdirTemp("", "kubetest")
	if err != nil {
		return nil, err
	}
	a := &API{dir: dir, tokens: map[string]string{}}
	var stops, releases []func()
	a.stop = func() {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
		for _, release := range releases { // once nothing listens on them
			release()
		}
		_ = os.RemoveAll(dir)
	}
	defer func() {
		if err != nil {
			a.stop()
		}
	}()

	// Ports reserved across test processes (freeaddr) until the API
	// stops: the API outlives the test that started it.
	addrs := make([]string, 3)
	for i := range addrs {
		addr, release, err := freeaddr.Acquire()
		if err != nil {
			return nil, fmt.Errorf("find a free port: %w", err)
		}
		addrs[i], releases = addr, append(releases, release)
	}
	clientURL, peerURL := "http://"+addrs[0], "http://"+addrs[1]
	stopEtcd, err := run(dir, "etcd", etcdBin, "--name", "kubetest", "--data-dir", filepath.Join(dir, "etcd"),
		"--listen-client-urls", clientURL, "--advertise-client-urls", clientURL,
		"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL,
		"--initial-cluster", "kubetest="+peerURL, "--initial-cluster-state", "new")
	if err != nil {
		return nil, err
	}
	stops = append(stops, stopEtcd)

	// Service account keys, generated per run.
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return nil, err
	}
	saKey, saPub := filepath.Join(dir, "sa.key"), filepath.Join(dir, "sa.pub")
	if err := os.WriteFile(saKey, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}), 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(saPub, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o644); err != nil {
		return nil, err
	}
	var csv bytes.Buffer
	for _, u := range []struct{ user, groups string }{
		{Admin, "system:masters"}, {AgentA, "system:masters"}, {AgentB, "system:masters"}, {Nobody, ""},
	} {
		b := make([]byte, 16)
		_, _ = rand.Read(b)
		a.tokens[u.user] = hex.EncodeToString(b)
		fmt.Fprintf(&csv, "%s,%s,uid-%s,\"%s\"\n", a.tokens[u.user], u.user, u.user, u.groups)
	}
	tokens := filepath.Join(dir, "tokens.csv")
	if err := os.WriteFile(tokens, csv.Bytes(), 0o600); err != nil {
		return nil, err
	}

	addr := addrs[2]
	_, port, _ := net.SplitHostPort(addr)
	a.URL = "https://" + addr
	certDir := filepath.Join(dir, "certs")
	stopAPI, err := run(dir, "kube-apiserver", apiBin,
		"--etcd-servers="+clientURL,
		"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", "--secure-port="+port,
		"--cert-dir="+certDir,
		"--token-auth-file="+tokens,
		"--authorization-mode=RBAC",
		"--service-account-issuer="+a.URL,
		"--service-account-key-file="+saPub,
		"--service-account-signing-key-file="+saKey,
		"--service-cluster-ip-range=10.96.0.0/24",
		"--enable-priority-and-fairness=false")
	if err != nil {
		return nil, err
	}
	stops = append(stops, stopAPI)

	// Ready: /readyz answers "ok" with the admin's token. The serving
	// certificate is written before the port opens.
	deadline := time.Now().Add(90 * time.Second)
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // polling readiness only
	for {
		req, _ := http.NewRequest(http.MethodGet, a.URL+"/readyz", nil)
		req.Header.Set("Authorization", "Bearer "+a.tokens[Admin])
		resp, err := hc.Do(req)
		if err == nil {
			var b bytes.Buffer
			_, _ = b.ReadFrom(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && strings.TrimSpace(b.String()) == "ok" {
				break
			}
			err = fmt.Errorf("/readyz: %s: %s", resp.Status, tail(b.Bytes(), 5))
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "kube-apiserver.log"))
			return nil, fmt.Errorf("not ready after 90s (last error %w); log tail:\n%s", err, tail(log, 30))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if a.CA, err = os.ReadFile(filepath.Join(certDir, "apiserver.crt")); err != nil {
		return nil, err
	}
	return a, nil
}

// run starts a program in its own process group with its output in
// dir/<name>.log; the returned stop kills the group and waits.
func run(dir, name, bin string, args ...string) (func(), error) {
	log, err := os.Create(filepath.Join(dir, name+".log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = log, log
	// Its own group, and gone with the test binary if that dies.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		log.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	return func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
		log.Close()
	}, nil
}

func tail(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Token is user's bearer token.
func (a *API) Token(user string) string { return a.tokens[user] }

// Kubeconfig writes a kubeconfig for user under t.TempDir() and returns
// its path. With impersonate set, user acts as that identity (a service
// account: "system:serviceaccount:<ns>:<name>"), as RBAC tests need.
func (a *API) Kubeconfig(t testing.TB, user, impersonate string) string {
	t.Helper()
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["kubetest"] = &clientcmdapi.Cluster{Server: a.URL, CertificateAuthorityData: a.CA}
	cfg.AuthInfos[user] = &clientcmdapi.AuthInfo{Token: a.tokens[user], Impersonate: impersonate}
	cfg.Contexts["kubetest"] = &clientcmdapi.Context{Cluster: "kubetest", AuthInfo: user}
	cfg.CurrentContext = "kubetest"
	path := filepath.Join(t.TempDir(), user+".kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// RESTConfig is a client configuration for user.
func (a *API) RESTConfig(user string) *rest.Config {
	return &rest.Config{
		Host:            a.URL,
		BearerToken:     a.tokens[user],
		TLSClientConfig: rest.TLSClientConfig{CAData: a.CA},
		QPS:             50, Burst: 100,
	}
}

// Client is a typed client for the admin.
func (a *API) Client(t testing.TB) kubernetes.Interface {
	t.Helper()
	c, err := kubernetes.NewForConfig(a.RESTConfig(Admin))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Eventually is poll.Until for a condition that asks the API server: each
// call of cond gets a context that ends after 5s.
func Eventually(t testing.TB, timeout time.Duration, cond func(ctx context.Context) bool, msg string, args ...any) {
	t.Helper()
	poll.Until(t, timeout, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return cond(ctx)
	}, msg, args...)
}
