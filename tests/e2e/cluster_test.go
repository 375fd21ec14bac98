package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// ---- etcd -----------------------------------------------------------------------------

type etcdServer struct {
	*proc
	clientURL string
	client    *clientv3.Client
}

// workDir makes a temporary directory for one test: removed afterwards, or kept (and named in
// the test log) when the test failed or TROUSSEAU_E2E_KEEP asks for it.
func workDir(t *testing.T, env e2eEnv, prefix string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if env.keep || t.Failed() {
			t.Logf("work dir kept: %s", dir)
			return
		}
		os.RemoveAll(dir)
	})
	return dir
}

// startEtcd runs the etcd binary on two random loopback ports with its data in dir and
// waits for /health. A lost port race (etcd exits at once) is retried with new ports.
func startEtcd(t *testing.T, bin, dir string, timeout time.Duration) *etcdServer {
	t.Helper()
	var lastErr error
	for attempt := 1; attempt <= 3; attempt++ {
		ports := freePorts(t, 2)
		clientURL := fmt.Sprintf("http://127.0.0.1:%d", ports[0])
		peerURL := fmt.Sprintf("http://127.0.0.1:%d", ports[1])
		dataDir := filepath.Join(dir, fmt.Sprintf("etcd-data-%d", attempt))
		p := startProc(t, "etcd", filepath.Join(dir, "etcd.log"), bin,
			"--name=e2e",
			"--data-dir="+dataDir,
			"--listen-client-urls="+clientURL,
			"--advertise-client-urls="+clientURL,
			"--listen-peer-urls="+peerURL,
			"--initial-advertise-peer-urls="+peerURL,
			"--initial-cluster=e2e="+peerURL,
			"--initial-cluster-state=new",
			"--initial-cluster-token=trousseau-e2e",
			"--unsafe-no-fsync=true", // a throwaway test store on a shared, busy disk
			"--logger=zap",
			"--log-level=warn",
		)
		err := waitHTTP(p, clientURL+"/health", http.DefaultClient, timeout, func(code int, body string) bool {
			return code == 200 && strings.Contains(body, `"health":"true"`)
		})
		if err == nil {
			c, err := clientv3.New(clientv3.Config{
				Endpoints:   []string{clientURL},
				DialTimeout: 5 * time.Second,
				Logger:      zap.NewNop(),
			})
			if err != nil {
				t.Fatalf("etcd client: %v", err)
			}
			t.Cleanup(func() { c.Close() })
			p.dumpOnFailure(t, 40)
			return &etcdServer{proc: p, clientURL: clientURL, client: c}
		}
		lastErr = err
		if !p.exited() {
			p.stop(t, 10*time.Second)
			t.Fatalf("etcd did not become healthy: %v\n%s", err, p.tail(40))
		}
		t.Logf("etcd attempt %d exited early (%v), retrying with new ports:\n%s", attempt, err, p.tail(10))
	}
	t.Fatalf("etcd did not start after 3 attempts: %v", lastErr)
	return nil
}

// waitHTTP polls url every 250 ms until ok(code, body) or timeout; it gives up early if
// the process exits.
func waitHTTP(p *proc, url string, c *http.Client, timeout time.Duration, ok func(int, string) bool) error {
	deadline := time.Now().Add(timeout)
	last := "no answer yet"
	for time.Now().Before(deadline) {
		if p.exited() {
			return fmt.Errorf("%s exited (%s) before %s was ready; last: %s", p.name, exitDesc(p.err), url, last)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := c.Do(req)
		if err == nil {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
			if ok(resp.StatusCode, string(b)) {
				cancel()
				return nil
			}
			last = fmt.Sprintf("HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(b)))
		} else {
			last = err.Error()
		}
		cancel()
		time.Sleep(250 * time.Millisecond)
	}
	return fmt.Errorf("%s not ready within %s; last: %s", url, timeout, last)
}

// ---- kube-apiserver -------------------------------------------------------------------

type apiServer struct {
	*proc
	url    string
	http   *http.Client
	client *kubernetes.Clientset
}

func writeEncryptionConfig(t *testing.T, path, providerName, socket string) {
	t.Helper()
	writeEncryptionProviders(t, path, kmsProvider(providerName, socket), identityProvider)
}

// identityProvider and kmsProvider are entries of the providers list, in order of use: the
// first one writes, every one is tried for reads.
const identityProvider = "      - identity: {}\n"

func kmsProvider(providerName, socket string) string {
	return fmt.Sprintf(`      - kms:
          apiVersion: v2
          name: %s
          endpoint: unix://%s
          timeout: 3s
`, providerName, socket)
}

func writeEncryptionProviders(t *testing.T, path string, providers ...string) {
	t.Helper()
	cfg := `apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
  - resources:
      - secrets
    providers:
` + strings.Join(providers, "")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatalf("write %s: %v", path, err)
	}
}

// startAPIServer starts kube-apiserver on a random loopback port against etcdURL and
// waits for /readyz. Everything that could reach off the machine is loopback or off.
func startAPIServer(t *testing.T, bin, dir, name, etcdURL string, encFlags []string, p *pki, timeout time.Duration) *apiServer {
	t.Helper()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(p.caPEM) {
		t.Fatal("CA PEM did not parse")
	}
	cert, err := tls.X509KeyPair(p.clientCertPEM, p.clientKeyPEM)
	if err != nil {
		t.Fatalf("client key pair: %v", err)
	}
	httpc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs: pool, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12,
	}}}
	certDir := filepath.Join(dir, name+"-certs")
	var lastErr error
	for attempt := 1; attempt <= 3; attempt++ {
		port := freePorts(t, 1)[0]
		args := []string{
			"--bind-address=127.0.0.1",
			"--advertise-address=127.0.0.1",
			"--secure-port=" + strconv.Itoa(port),
			"--etcd-servers=" + etcdURL,
			"--tls-cert-file=" + p.serverCertFile,
			"--tls-private-key-file=" + p.serverKeyFile,
			"--client-ca-file=" + p.caFile,
			"--cert-dir=" + certDir, // nothing written under /var/run/kubernetes
			"--service-account-key-file=" + p.saPubFile,
			"--service-account-signing-key-file=" + p.saKeyFile,
			"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
			"--service-cluster-ip-range=10.0.0.0/24",
			"--authorization-mode=RBAC",
			"--anonymous-auth=false",
			"--profiling=false",
			"--enable-priority-and-fairness=false",
			"--endpoint-reconciler-type=none", // no kubernetes Endpoints pointing anywhere
			"--logging-format=text",
			"--v=" + envOr("TROUSSEAU_E2E_APISERVER_V", "2"),
		}
		args = append(args, encFlags...) // from the kubeadm-rendered pod
		pr := startProc(t, name, filepath.Join(dir, name+".log"), bin, args...)
		url := fmt.Sprintf("https://127.0.0.1:%d", port)
		err := waitHTTP(pr, url+"/readyz", httpc, timeout, func(code int, body string) bool {
			return code == 200 && strings.TrimSpace(body) == "ok"
		})
		if err == nil {
			cs, err := kubernetes.NewForConfig(&rest.Config{
				Host:    url,
				Timeout: 30 * time.Second,
				TLSClientConfig: rest.TLSClientConfig{
					CAData: p.caPEM, CertData: p.clientCertPEM, KeyData: p.clientKeyPEM,
				},
				QPS: 50, Burst: 100,
			})
			if err != nil {
				t.Fatalf("client-go: %v", err)
			}
			pr.dumpOnFailure(t, 80)
			return &apiServer{proc: pr, url: url, http: httpc, client: cs}
		}
		lastErr = err
		if !pr.exited() {
			verbose := ""
			if code, body, e := getURL(httpc, url+"/readyz?verbose"); e == nil {
				verbose = fmt.Sprintf("/readyz?verbose HTTP %d:\n%s", code, body)
			}
			pr.stop(t, 30*time.Second)
			t.Fatalf("%s not ready: %v\n%s\n---- last lines of its log ----\n%s", name, err, verbose, pr.tail(80))
		}
		if !strings.Contains(pr.tail(200), "address already in use") {
			t.Fatalf("%s exited during start-up: %v\n---- last lines of its log ----\n%s", name, err, pr.tail(80))
		}
		t.Logf("%s attempt %d lost a port race, retrying on a new port", name, attempt)
	}
	t.Fatalf("%s did not start after 3 attempts: %v", name, lastErr)
	return nil
}

func getURL(c *http.Client, url string) (int, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	return resp.StatusCode, string(b), err
}

// ---- kube-apiserver's own KMS call counters (its /metrics) ----------------------------

// kmsCalls counts the KMS gRPC calls one kube-apiserver process made, keyed
// "Method code" (e.g. "Decrypt OK"), from
// apiserver_envelope_encryption_kms_operations_latency_seconds_count.
type kmsCalls map[string]int

var (
	kmsMetricRe = regexp.MustCompile(`^apiserver_envelope_encryption_kms_operations_latency_seconds_count\{([^}]*)\} ([0-9.e+]+)$`)
	labelRe     = regexp.MustCompile(`(\w+)="([^"]*)"`)
)

func (a *apiServer) kmsCalls(t *testing.T) kmsCalls {
	t.Helper()
	code, body, err := getURL(a.http, a.url+"/metrics")
	if err != nil || code != 200 {
		t.Fatalf("GET /metrics: HTTP %d, %v", code, err)
	}
	out := kmsCalls{}
	for _, line := range strings.Split(body, "\n") {
		m := kmsMetricRe.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		labels := map[string]string{}
		for _, l := range labelRe.FindAllStringSubmatch(m[1], -1) {
			labels[l[1]] = l[2]
		}
		method := labels["method_name"]
		if i := strings.LastIndex(method, "/"); i >= 0 {
			method = method[i+1:]
		}
		v, err := strconv.ParseFloat(m[2], 64)
		if err != nil {
			t.Fatalf("metric value %q: %v", m[2], err)
		}
		out[method+" "+labels["grpc_status_code"]] += int(v)
	}
	return out
}

func (c kmsCalls) String() string {
	if len(c) == 0 {
		return "none"
	}
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s=%d", k, c[k]))
	}
	return strings.Join(parts, " ")
}

// since returns c minus an earlier snapshot.
func (c kmsCalls) since(before kmsCalls) kmsCalls {
	d := kmsCalls{}
	for k, v := range c {
		if v-before[k] != 0 {
			d[k] = v - before[k]
		}
	}
	return d
}
