package e2e

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestKubeAPIServerOnStaticPodSocket is the kube-apiserver end of the static pod proof
// (tests/integration/test_kubelet.py): the plugin is the one a real kubelet started from
// manifests/trousseau.yaml, and this kube-apiserver, pointed at that pod's socket on the host,
// must store Secrets as k8s:enc:kms:v2:trousseau: and read them back.
func TestKubeAPIServerOnStaticPodSocket(t *testing.T) {
	sock := os.Getenv("TROUSSEAU_STATIC_POD_SOCKET")
	if sock == "" {
		t.Skip("TROUSSEAU_STATIC_POD_SOCKET is not set: tests/integration/test_kubelet.py runs " +
			"this test against the socket of the plugin that kubelet started")
	}
	t.Setenv("TROUSSEAU_SOCKET", sock)
	t.Setenv("TROUSSEAU_ROTATE_CMD", "true") // loadEnv wants one; this test does not rotate
	env := loadEnv(t)
	dir := workDir(t, env, "trousseau-e2e-staticpod-")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	et := startEtcd(t, env.etcdBin, dir, env.startTimeout)
	p := makePKI(t, filepath.Join(dir, "pki"))
	enc := filepath.Join(dir, "encryption-config.yaml")
	writeEncryptionConfig(t, enc, providerName, sock)
	t0 := time.Now()
	api := startAPIServer(t, env.apiserverBin, dir, "kube-apiserver", et.clientURL,
		[]string{"--encryption-provider-config=" + enc}, p, env.startTimeout)
	t.Logf("kube-apiserver ready after %s, KMS v2 provider at the static pod's socket %s",
		time.Since(t0).Round(time.Millisecond), sock)
	checkKMSHealth(t, api)

	if _, err := api.client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{Name: namespace}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create namespace: %v", err)
	}
	const name = "through-the-static-pod"
	v := "static-pod-plaintext-" + randHex(t, 12)
	if _, err := api.client.CoreV1().Secrets(namespace).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name}, Data: map[string][]byte{"v": []byte(v)},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create Secret: %v", err)
	}
	s := storedSecret(t, ctx, et, name, v) // prefix, no plaintext, a decodable envelope
	t.Logf("etcd holds %s as %q + EncryptedObject (key_id %s)", name, storedPrefix, short(s.obj.KeyID))
	got, err := api.client.CoreV1().Secrets(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil || string(got.Data["v"]) != v {
		t.Fatalf("Secret does not read back through kube-apiserver: %v", err)
	}
	calls := api.kmsCalls(t)
	t.Logf("read back through kube-apiserver; its KMS calls: %s", calls)
}
