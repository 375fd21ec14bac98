package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestSecretsReadAfterThePrimaryVaultIsReplaced is docs/secondary.md end to end: a plugin with
// vault.secondary (two independent OpenBao servers) behind a real kube-apiserver. Secrets are
// written (each stored seed carries the secondary.trousseau.io copy), kube-apiserver stops,
// tests/integration/test_e2e_secondary.py destroys the primary OpenBao's data and starts a
// fresh one without the key, and a new kube-apiserver (no DEK cache) still reads every Secret:
// the plugin falls back to the secondary's copy. The two sides meet through files in
// TROUSSEAU_SECONDARY_SIGNAL_DIR ("written" from here, "replaced" from the Python side).
func TestSecretsReadAfterThePrimaryVaultIsReplaced(t *testing.T) {
	sock, sig := os.Getenv("TROUSSEAU_SECONDARY_SOCKET"), os.Getenv("TROUSSEAU_SECONDARY_SIGNAL_DIR")
	if sock == "" || sig == "" {
		t.Skip("TROUSSEAU_SECONDARY_SOCKET/SIGNAL_DIR are not set: " +
			"tests/integration/test_e2e_secondary.py runs this test")
	}
	t.Setenv("TROUSSEAU_SOCKET", sock)
	t.Setenv("TROUSSEAU_ROTATE_CMD", "true") // loadEnv wants one; this test does not rotate
	env := loadEnv(t)
	dir := workDir(t, env, "trousseau-e2e-secondary-")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	et := startEtcd(t, env.etcdBin, dir, env.startTimeout)
	p := makePKI(t, filepath.Join(dir, "pki"))
	enc := filepath.Join(dir, "encryption-config.yaml")
	writeEncryptionConfig(t, enc, providerName, sock)
	flags := []string{"--encryption-provider-config=" + enc}
	api := startAPIServer(t, env.apiserverBin, dir, "kube-apiserver", et.clientURL, flags, p, env.startTimeout)
	checkKMSHealth(t, api)
	if _, err := api.client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{Name: namespace}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create namespace: %v", err)
	}
	const n = 5
	values := map[string]string{}
	for i := 0; i < n; i++ {
		name := "dr-secret-" + strconv.Itoa(i)
		v := "secondary-plaintext-" + randHex(t, 12)
		if _, err := api.client.CoreV1().Secrets(namespace).Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: name}, Data: map[string][]byte{"v": []byte(v)},
		}, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create %s: %v", name, err)
		}
		values[name] = v
		s := storedSecret(t, ctx, et, name, v)
		copyAnn := string(s.obj.Annotations["secondary.trousseau.io"])
		if !strings.HasPrefix(copyAnn, "1;") || !strings.Contains(s.obj.KeyID, "|") {
			t.Fatalf("%s has no secondary copy: key_id %q, annotations %q", name, s.obj.KeyID, s.obj.Annotations)
		}
	}
	t.Logf("%d Secrets stored with a secondary copy; stopping kube-apiserver", n)
	api.stop(t, 60*time.Second)

	if err := os.WriteFile(filepath.Join(sig, "written"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(4 * time.Minute)
	for {
		if _, err := os.Stat(filepath.Join(sig, "replaced")); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the primary OpenBao was not replaced within 4 minutes")
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("primary OpenBao destroyed and replaced by a fresh one; starting a new kube-apiserver")

	api2 := startAPIServer(t, env.apiserverBin, dir, "kube-apiserver-2", et.clientURL, flags, p, env.startTimeout)
	checkKMSHealth(t, api2)
	for name, v := range values {
		got, err := api2.client.CoreV1().Secrets(namespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatalf("%s does not read after the primary was replaced: %v", name, err)
		}
		if string(got.Data["v"]) != v {
			t.Fatalf("%s reads back wrong", name)
		}
	}
	t.Logf("every Secret reads through the secondary; KMS calls: %s", api2.kmsCalls(t))
	api2.stop(t, 60*time.Second)
	et.stop(t, 30*time.Second)
}
