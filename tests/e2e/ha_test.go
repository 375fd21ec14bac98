// HA control plane (issue 7 part 4): two kube-apiservers sharing one etcd, each with its own
// Trousseau plugin on its own socket, both plugins pointed at a 3-node OpenBao raft cluster.
// Driven by tests/integration/test_e2e_ha.py, which starts the cluster and the two plugins.
//
// Environment (all set by the driver; the test skips, naming the driver, when
// TROUSSEAU_HA_SOCKETS is unset, so `go test ./...` for the single-apiserver test is unaffected;
// the driver asserts "--- PASS: TestHAControlPlane" so a skip cannot look green):
//
//	TROUSSEAU_HA_SOCKETS   "sockA,sockB": the two plugins' sockets (apiserver A uses A, B uses B)
//	TROUSSEAU_HA_METRICS   "urlA,urlB": the plugins' /metrics URLs (http.listen)
//	TROUSSEAU_HA_BAO_NODES "https://127.0.0.1:p=pid,...": the OpenBao nodes and their pids
//	TROUSSEAU_HA_BAO_TLS   "ca,cert,key": files to ask the nodes' sys/health over mutual TLS
//	TROUSSEAU_ROTATE_CMD   shell command that rotates the Transit key
//	TROUSSEAU_HA_SECRETS   how many Secrets for the restart step (default 1000)
package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kmstypes "k8s.io/apiserver/pkg/storage/value/encrypt/envelope/kmsv2/v2"
)

const haNamespace = "trousseau-ha"

type haEnv struct {
	sockets, metrics []string
	baoNodes         map[string]int // addr -> pid
	baoHTTP          *http.Client
	rotateCmd        string
	secrets          int
}

func loadHAEnv(t *testing.T) haEnv {
	t.Helper()
	socks := os.Getenv("TROUSSEAU_HA_SOCKETS")
	if socks == "" {
		t.Skip("TROUSSEAU_HA_SOCKETS is not set: this test is run by tests/integration/test_e2e_ha.py")
	}
	e := haEnv{sockets: strings.Split(socks, ","), metrics: strings.Split(os.Getenv("TROUSSEAU_HA_METRICS"), ","),
		baoNodes: map[string]int{}, rotateCmd: os.Getenv("TROUSSEAU_ROTATE_CMD")}
	if len(e.sockets) != 2 || len(e.metrics) != 2 || e.rotateCmd == "" {
		t.Fatalf("TROUSSEAU_HA_SOCKETS and TROUSSEAU_HA_METRICS need two entries each, TROUSSEAU_ROTATE_CMD a command")
	}
	for _, s := range e.sockets {
		if fi, err := os.Stat(s); err != nil || fi.Mode()&os.ModeSocket == 0 {
			t.Fatalf("%s is not a socket (%v)", s, err)
		}
	}
	for _, kv := range strings.Split(os.Getenv("TROUSSEAU_HA_BAO_NODES"), ",") {
		addr, pid, ok := strings.Cut(kv, "=")
		n, err := strconv.Atoi(pid)
		if !ok || err != nil || !strings.HasPrefix(addr, "https://") {
			t.Fatalf("TROUSSEAU_HA_BAO_NODES entry %q is not https://host:port=pid", kv)
		}
		e.baoNodes[addr] = n
	}
	if len(e.baoNodes) != 3 {
		t.Fatalf("TROUSSEAU_HA_BAO_NODES: want 3 nodes, got %d", len(e.baoNodes))
	}
	files := strings.Split(os.Getenv("TROUSSEAU_HA_BAO_TLS"), ",")
	if len(files) != 3 {
		t.Fatal("TROUSSEAU_HA_BAO_TLS must be ca,cert,key")
	}
	caPEM, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	cert, err := tls.LoadX509KeyPair(files[1], files[2])
	if err != nil {
		t.Fatalf("OpenBao client key pair: %v", err)
	}
	e.baoHTTP = &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs: pool, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}}}
	e.secrets = 1000
	if v := os.Getenv("TROUSSEAU_HA_SECRETS"); v != "" {
		if e.secrets, err = strconv.Atoi(v); err != nil || e.secrets < 1 {
			t.Fatalf("TROUSSEAU_HA_SECRETS=%q", v)
		}
	}
	return e
}

// activeBao returns the address and pid of the node whose sys/health says 200 (active).
func (e haEnv) activeBao(t *testing.T) (string, int) {
	t.Helper()
	for addr, pid := range e.baoNodes {
		resp, err := e.baoHTTP.Get(addr + "/v1/sys/health")
		if err != nil {
			continue
		}
		resp.Body.Close()
		if resp.StatusCode == 200 {
			return addr, pid
		}
	}
	t.Fatal("no OpenBao node says active (sys/health 200)")
	return "", 0
}

var pluginDecryptRe = regexp.MustCompile(`^trousseau_kms_requests_total\{([^}]*)\} ([0-9.e+]+)$`)

// pluginCalls sums trousseau_kms_requests_total{api="v2",method=m} over all codes, per method
// ("Decrypt", "Decrypt!OK" for the failed ones).
func pluginCalls(t *testing.T, url string) map[string]int {
	t.Helper()
	code, body, err := getURL(http.DefaultClient, url)
	if err != nil || code != 200 {
		t.Fatalf("GET %s: HTTP %d %v", url, code, err)
	}
	out := map[string]int{}
	for _, line := range strings.Split(body, "\n") {
		m := pluginDecryptRe.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		labels := map[string]string{}
		for _, l := range labelRe.FindAllStringSubmatch(m[1], -1) {
			labels[l[1]] = l[2]
		}
		if labels["api"] != "v2" {
			continue
		}
		v, _ := strconv.ParseFloat(m[2], 64)
		out[labels["method"]] += int(v)
		if labels["code"] != "OK" {
			out[labels["method"]+"!OK"] += int(v)
		}
	}
	return out
}

type haSecrets struct {
	mu    sync.Mutex
	plain map[string]string
}

func (s *haSecrets) put(name, v string) { s.mu.Lock(); s.plain[name] = v; s.mu.Unlock() }

func createHA(ctx context.Context, a *apiServer, name, v string) error {
	_, err := a.client.CoreV1().Secrets(haNamespace).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Data:       map[string][]byte{"v": []byte(v)},
	}, metav1.CreateOptions{})
	return err
}

// readAllHA lists the namespace through a and checks every Secret ever written is there with
// its value.
func readAllHA(t *testing.T, ctx context.Context, a *apiServer, s *haSecrets, what string) {
	t.Helper()
	list, err := a.client.CoreV1().Secrets(haNamespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatalf("%s: list through %s: %v", what, a.name, err)
	}
	got := map[string]string{}
	for _, it := range list.Items {
		got[it.Name] = string(it.Data["v"])
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	missing := 0
	for name, v := range s.plain {
		if got[name] != v {
			missing++
			if missing <= 5 {
				t.Errorf("%s: %s through %s: got %q, want %q", what, name, a.name, got[name], v)
			}
		}
	}
	if missing > 0 {
		t.Fatalf("%s: %d of %d Secrets missing or wrong through %s", what, missing, len(s.plain), a.name)
	}
	t.Logf("%s: all %d Secrets read back through %s (list, values checked)", what, len(s.plain), a.name)
}

// startPair starts both kube-apiservers at once and waits for both.
func startPair(t *testing.T, bin, dir, suffix, etcdURL string, enc [2]string, p *pki, timeout time.Duration) [2]*apiServer {
	t.Helper()
	var out [2]*apiServer
	var wg sync.WaitGroup
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done() // startAPIServer's t.Fatalf only ends this goroutine: checked below
			out[i] = startAPIServer(t, bin, dir, fmt.Sprintf("kube-apiserver-%c%s", 'A'+i, suffix), etcdURL, []string{"--encryption-provider-config=" + enc[i]}, p, timeout)
		}()
	}
	wg.Wait()
	if out[0] == nil || out[1] == nil {
		t.FailNow()
	}
	return out
}

func TestHAControlPlane(t *testing.T) {
	he := loadHAEnv(t)
	t.Setenv("TROUSSEAU_SOCKET", he.sockets[0]) // loadEnv checks a socket; the HA test has two
	t.Setenv("TROUSSEAU_ROTATE_CMD", he.rotateCmd)
	env := loadEnv(t)
	testStart := time.Now()
	dir := workDir(t, env, "trousseau-e2e-ha-")
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()

	et := startEtcd(t, env.etcdBin, dir, env.startTimeout)
	p := makePKI(t, filepath.Join(dir, "pki"))
	var enc [2]string
	for i := range 2 {
		enc[i] = filepath.Join(dir, fmt.Sprintf("encryption-config-%c.yaml", 'A'+i))
		writeEncryptionConfig(t, enc[i], providerName, he.sockets[i])
	}
	t0 := time.Now()
	apis := startPair(t, env.apiserverBin, dir, "", et.clientURL, enc, p, env.startTimeout)
	t.Logf("HA: etcd at %s; kube-apiserver A (plugin %s) and B (plugin %s) ready after %s",
		et.clientURL, he.sockets[0], he.sockets[1], time.Since(t0).Round(time.Millisecond))
	if _, err := apis[0].client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{Name: haNamespace}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create namespace: %v", err)
	}
	sec := &haSecrets{plain: map[string]string{}}

	// ---- 1. written through one, read through the other ----
	for i := range 2 {
		w, r := apis[i], apis[1-i]
		name, v := fmt.Sprintf("cross-%c", 'a'+i), "ha-plaintext-"+randHex(t, 12)
		if err := createHA(ctx, w, name, v); err != nil {
			t.Fatalf("create %s through %s: %v", name, w.name, err)
		}
		sec.put(name, v)
		got, err := r.client.CoreV1().Secrets(haNamespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil || string(got.Data["v"]) != v {
			t.Fatalf("%s written through %s does not read through %s: %v", name, w.name, r.name, err)
		}
		et.checkHA(t, ctx, name, v)
		t.Logf("step 1: %s written through %s, read back through %s; etcd holds the KMS v2 envelope", name, w.name, r.name)
	}
	keyBefore := et.keyIDHA(t, ctx, "cross-a")
	if k := et.keyIDHA(t, ctx, "cross-b"); k != keyBefore {
		t.Fatalf("the two apiservers write with different key_ids before any rotation: %q vs %q", keyBefore, k)
	}

	// ---- 2. Transit rotation converges on both ----
	rctx, rcancel := context.WithTimeout(ctx, 60*time.Second)
	if out, err := exec.CommandContext(rctx, "sh", "-c", he.rotateCmd).CombinedOutput(); err != nil {
		rcancel()
		t.Fatalf("rotate command failed: %v\n%s", err, out)
	}
	rcancel()
	rotatedAt := time.Now()
	var converged [2]time.Duration
	var newKey [2]string
	t.Logf("step 2: Transit key rotated; a probe Secret through each apiserver every 3 s until both store the new key_id (bound %s)", env.rotateMax)
	for i := 0; converged[0] == 0 || converged[1] == 0; i++ {
		for j := range 2 {
			if converged[j] != 0 {
				continue
			}
			name, v := fmt.Sprintf("rotate-%c-%d", 'a'+j, i), "ha-plaintext-"+randHex(t, 12)
			if err := createHA(ctx, apis[j], name, v); err != nil {
				t.Fatalf("create %s: %v", name, err)
			}
			sec.put(name, v)
			if k := et.keyIDHA(t, ctx, name); k != keyBefore {
				converged[j], newKey[j] = time.Since(rotatedAt), k
				t.Logf("step 2: %s adopted the new key_id after %s (%s)", apis[j].name, converged[j].Round(time.Second), short(k))
			}
		}
		if converged[0] == 0 || converged[1] == 0 {
			if time.Since(rotatedAt) > env.rotateMax {
				t.Fatalf("rotation not adopted by both within %s: A %s, B %s", env.rotateMax, converged[0], converged[1])
			}
			time.Sleep(3 * time.Second)
		}
	}
	if newKey[0] != newKey[1] {
		t.Fatalf("after rotation A writes key_id %q, B %q", newKey[0], newKey[1])
	}
	t.Logf("HA-NUMBER rotation converged: A %.0f s, B %.0f s, both %.0f s (plugins' status.refresh_period 2s; kube-apiserver polls Status ~60 s)",
		converged[0].Seconds(), converged[1].Seconds(), max(converged[0], converged[1]).Seconds())

	// ---- 3. the active OpenBao node killed under writes through both apiservers ----
	type attempt struct {
		start, end time.Time
		err        error
	}
	const writersPer = 2
	var mu sync.Mutex
	attempts := map[string][]attempt{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for j := range 2 {
		for w := range writersPer {
			wg.Add(1)
			go func() {
				defer wg.Done()
				key := fmt.Sprintf("%s/w%d", apis[j].name, w)
				for n := 0; ; n++ {
					select {
					case <-stop:
						return
					default:
					}
					name, v := fmt.Sprintf("kill-%c%d-%d", 'a'+j, w, n), fmt.Sprintf("ha-kill-%d-%d-%d", j, w, n)
					wctx, wcancel := context.WithTimeout(ctx, 15*time.Second)
					s := time.Now()
					err := createHA(wctx, apis[j], name, v)
					wcancel()
					if err == nil {
						sec.put(name, v)
					}
					mu.Lock()
					attempts[key] = append(attempts[key], attempt{s, time.Now(), err})
					mu.Unlock()
					time.Sleep(50 * time.Millisecond)
				}
			}()
		}
	}
	time.Sleep(5 * time.Second)
	pluginsBefore := [2]map[string]int{pluginCalls(t, he.metrics[0]), pluginCalls(t, he.metrics[1])}
	addr, pid := he.activeBao(t)
	killedAt := time.Now()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill OpenBao %s (pid %d): %v", addr, pid, err)
	}
	t.Logf("step 3: SIGKILL to the active OpenBao node %s (pid %d) under %d writers per apiserver", addr, pid, writersPer)
	// a /readyz hit makes each apiserver call Status (when its last answer is >20 s old): the
	// plugins' Vault path is exercised during the failover, not only the cached DEK seed
	for time.Since(killedAt) < 20*time.Second {
		for _, a := range apis {
			getURL(a.http, a.url+"/readyz/kms-providers")
		}
		time.Sleep(time.Second)
	}
	close(stop)
	wg.Wait()
	for i := range 2 {
		after := pluginCalls(t, he.metrics[i])
		d := map[string]int{}
		for k, v := range after {
			if v != pluginsBefore[i][k] {
				d[k] = v - pluginsBefore[i][k]
			}
		}
		// these include the driver's direct Encrypt+Decrypt load on the plugins (test_e2e_ha.py)
		t.Logf("step 3: KMS calls plugin %c served during the kill window: %v", 'A'+i, d)
		for _, m := range []string{"Status", "Encrypt", "Decrypt"} {
			if d[m+"!OK"] != 0 {
				t.Errorf("plugin %c: %d %s calls failed during the OpenBao failover", 'A'+i, d[m+"!OK"], m)
			}
		}
	}
	total, failed := 0, 0
	var longest time.Duration
	var failMsgs []string
	for key, as := range attempts {
		var failStart time.Time
		for _, a := range as {
			total++
			if a.err != nil {
				failed++
				if len(failMsgs) < 5 {
					failMsgs = append(failMsgs, fmt.Sprintf("%s: %v", key, a.err))
				}
				if failStart.IsZero() {
					failStart = a.start
				}
				longest = max(longest, a.end.Sub(failStart))
			} else {
				failStart = time.Time{}
			}
		}
	}
	t.Logf("HA-NUMBER kill: %d writes through both apiservers over ~25 s, %d failed, longest failing window %s",
		total, failed, longest.Round(time.Millisecond))
	if len(failMsgs) > 0 {
		t.Logf("step 3: failures: %s", strings.Join(failMsgs, "; "))
	}
	// kube-apiserver's KMS timeout is 3 s and client-go retries; a failure lasting longer than
	// the apiserver's own retry budget (~10 s) is a real outage
	if longest > 10*time.Second {
		t.Errorf("writes failed for %s in a row during the OpenBao failover (allowed: 10 s)", longest)
	}
	if total < 20 {
		t.Errorf("only %d writes during the kill window: the load did not run", total)
	}
	for _, a := range apis {
		checkKMSHealth(t, a)
		readAllHA(t, ctx, a, sec, "step 3 (after the kill)")
	}

	// ---- 4. N Secrets, both apiservers restarted together ----
	t0 = time.Now()
	jobs := make(chan int)
	var errMu sync.Mutex
	var writeErrs []error
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a := apis[w%2]
			for n := range jobs {
				name, v := fmt.Sprintf("bulk-%04d", n), "ha-bulk-"+strconv.Itoa(n)+"-"+randHex(t, 6)
				var err error
				for try := 0; try < 3; try++ {
					if err = createHA(ctx, a, name, v); err == nil {
						break
					}
				}
				if err != nil {
					errMu.Lock()
					writeErrs = append(writeErrs, fmt.Errorf("%s: %w", name, err))
					errMu.Unlock()
					continue
				}
				sec.put(name, v)
			}
		}()
	}
	for n := range he.secrets {
		jobs <- n
	}
	close(jobs)
	wg.Wait()
	if len(writeErrs) > 0 {
		t.Fatalf("%d of %d bulk writes failed, first: %v", len(writeErrs), he.secrets, writeErrs[0])
	}
	t.Logf("step 4: %d Secrets written through both apiservers (16 workers) in %s; %d Secrets in all",
		he.secrets, time.Since(t0).Round(time.Millisecond), len(sec.plain))
	seeds := map[string]bool{}
	resp, err := et.client.Get(ctx, "/registry/secrets/"+haNamespace+"/", clientv3WithPrefix()...)
	if err != nil {
		t.Fatalf("etcd list: %v", err)
	}
	for _, kv := range resp.Kvs {
		seeds[seedOf(t, kv.Value)] = true
	}
	before := [2]map[string]int{pluginCalls(t, he.metrics[0]), pluginCalls(t, he.metrics[1])}
	var wg2 sync.WaitGroup
	for _, a := range apis {
		wg2.Add(1)
		go func() { defer wg2.Done(); a.stop(t, 60*time.Second) }()
	}
	wg2.Wait()
	t0 = time.Now()
	apis = startPair(t, env.apiserverBin, dir, "-restarted", et.clientURL, enc, p, env.startTimeout)
	ready := time.Since(t0)
	for _, a := range apis {
		readAllHA(t, ctx, a, sec, "step 4 (after the restart)")
	}
	readBack := time.Since(t0)
	after := [2]map[string]int{pluginCalls(t, he.metrics[0]), pluginCalls(t, he.metrics[1])}
	var dec [2]int
	for i := range 2 {
		dec[i] = after[i]["Decrypt"] - before[i]["Decrypt"]
		if f := after[i]["Decrypt!OK"] - before[i]["Decrypt!OK"]; f != 0 {
			t.Errorf("plugin %c: %d failed Decrypt calls during the cold start", 'A'+i, f)
		}
		if dec[i] < 1 {
			t.Errorf("plugin %c saw no Decrypt after its apiserver restarted: the restart did not reach the KMS", 'A'+i)
		}
	}
	t.Logf("HA-NUMBER cold start: both apiservers ready %.1f s after the simultaneous start, all %d Secrets read back through both after %.1f s",
		ready.Seconds(), len(sec.plain), readBack.Seconds())
	t.Logf("HA-NUMBER Decrypt calls reaching the plugins during the cold start: A %d, B %d (etcd holds %d Secrets under %d distinct DEK seeds); apiserver-side: A %s | B %s",
		dec[0], dec[1], len(resp.Kvs), len(seeds), apis[0].kmsCalls(t), apis[1].kmsCalls(t))
	for _, a := range apis {
		a.stop(t, 60*time.Second)
	}
	et.stop(t, 30*time.Second)
	t.Logf("HA: whole run %s", time.Since(testStart).Round(time.Second))
}

func clientv3WithPrefix() []clientv3.OpOption {
	return []clientv3.OpOption{clientv3.WithPrefix()}
}

// decodeHA checks a stored value is this provider's KMS v2 envelope and decodes it.
func decodeHA(t *testing.T, key string, raw []byte, plaintexts ...string) *kmstypes.EncryptedObject {
	t.Helper()
	if !bytes.HasPrefix(raw, []byte(storedPrefix)) {
		t.Fatalf("%s in etcd does not start with %q", key, storedPrefix)
	}
	for _, p := range plaintexts {
		if bytes.Contains(raw, []byte(p)) {
			t.Fatalf("%s in etcd contains its plaintext", key)
		}
	}
	obj := &kmstypes.EncryptedObject{}
	if err := proto.Unmarshal(raw[len(storedPrefix):], obj); err != nil || obj.KeyID == "" {
		t.Fatalf("%s: not a KMS v2 EncryptedObject with a key_id: %v", key, err)
	}
	return obj
}

func seedOf(t *testing.T, raw []byte) string {
	t.Helper()
	return string(decodeHA(t, "bulk secret", raw).EncryptedDEKSource)
}

func (et *etcdServer) getHA(t *testing.T, ctx context.Context, name string) []byte {
	t.Helper()
	key := "/registry/secrets/" + haNamespace + "/" + name
	resp, err := et.client.Get(ctx, key)
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("etcd get %s: %v (%d values)", key, err, len(resp.Kvs))
	}
	return resp.Kvs[0].Value
}

func (et *etcdServer) checkHA(t *testing.T, ctx context.Context, name, plain string) {
	t.Helper()
	decodeHA(t, name, et.getHA(t, ctx, name), plain)
}

func (et *etcdServer) keyIDHA(t *testing.T, ctx context.Context, name string) string {
	t.Helper()
	return decodeHA(t, name, et.getHA(t, ctx, name)).KeyID
}
