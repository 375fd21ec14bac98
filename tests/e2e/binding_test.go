package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestCopiedSecretDoesNotOpenInAnotherCluster is the copied-object attack of docs/binding.md,
// end to end: two clusters (each its own etcd and kube-apiserver) whose plugins share one
// Transit key and differ only in binding.cluster_id. A Secret written in cluster A, copied
// byte for byte from A's etcd into B's etcd at the same path (so kube-apiserver's own
// path-bound AES-GCM layer cannot tell), must not read in B, while it reads in A.
// tests/integration/test_e2e_binding.py starts the two plugins and sets the sockets.
func TestCopiedSecretDoesNotOpenInAnotherCluster(t *testing.T) {
	sockA, sockB := os.Getenv("TROUSSEAU_BINDING_SOCKET_A"), os.Getenv("TROUSSEAU_BINDING_SOCKET_B")
	if sockA == "" || sockB == "" {
		t.Skip("TROUSSEAU_BINDING_SOCKET_A/B are not set: tests/integration/test_e2e_binding.py " +
			"runs this test against two plugins bound to different cluster ids")
	}
	t.Setenv("TROUSSEAU_SOCKET", sockA)
	t.Setenv("TROUSSEAU_ROTATE_CMD", "true") // loadEnv wants one; this test does not rotate
	env := loadEnv(t)
	dir := workDir(t, env, "trousseau-e2e-binding-")
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()

	type cluster struct {
		et  *etcdServer
		api *apiServer
	}
	start := func(name, sock string) cluster {
		d := filepath.Join(dir, name)
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		et := startEtcd(t, env.etcdBin, d, env.startTimeout)
		p := makePKI(t, filepath.Join(d, "pki"))
		enc := filepath.Join(d, "encryption-config.yaml")
		writeEncryptionConfig(t, enc, providerName, sock)
		api := startAPIServer(t, env.apiserverBin, d, "kube-apiserver", et.clientURL,
			[]string{"--encryption-provider-config=" + enc}, p, env.startTimeout)
		checkKMSHealth(t, api)
		if _, err := api.client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{
			ObjectMeta: metav1.ObjectMeta{Name: namespace}}, metav1.CreateOptions{}); err != nil {
			t.Fatalf("%s: create namespace: %v", name, err)
		}
		return cluster{et, api}
	}
	a := start("cluster-a", sockA)
	b := start("cluster-b", sockB)
	t.Logf("two clusters up, plugins bound to different cluster ids, one Transit key")

	const name = "copied-secret"
	v := "binding-plaintext-" + randHex(t, 12)
	if _, err := a.api.client.CoreV1().Secrets(namespace).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name}, Data: map[string][]byte{"v": []byte(v)},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create Secret in A: %v", err)
	}
	s := storedSecret(t, ctx, a.et, name, v)
	if !strings.HasSuffix(s.obj.KeyID, "+aad1") || string(s.obj.Annotations["aad.trousseau.io"]) != "1;cluster=cluster-a" {
		t.Fatalf("A's Secret is not bound: key_id %q, annotations %q", s.obj.KeyID, s.obj.Annotations)
	}
	t.Logf("A stored %s bound: key_id %s, aad.trousseau.io=%q", name, s.obj.KeyID,
		s.obj.Annotations["aad.trousseau.io"])

	// The attack: the same bytes at the same path in B's etcd.
	key := "/registry/secrets/" + namespace + "/" + name
	if _, err := b.et.client.Put(ctx, key, string(s.raw)); err != nil {
		t.Fatalf("etcd put into B: %v", err)
	}
	_, err := b.api.client.CoreV1().Secrets(namespace).Get(ctx, name, metav1.GetOptions{})
	if err == nil {
		t.Fatal("the Secret copied from cluster A's etcd read in cluster B: binding did not hold")
	}
	t.Logf("B refuses the copied Secret: %v", err)
	if strings.Contains(err.Error(), v) {
		t.Fatal("the error names the plaintext")
	}
	// And it is the binding that refused it: kube-apiserver passes the plugin's
	// INVALID_ARGUMENT message on ("failed to decrypt DEK, error: ... binding mismatch").
	if !strings.Contains(err.Error(), "binding mismatch") || !strings.Contains(err.Error(), `written for cluster "cluster-a"`) {
		t.Fatalf("B refused the copied Secret, but not by the binding: %v", err)
	}
	got, err := a.api.client.CoreV1().Secrets(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil || string(got.Data["v"]) != v {
		t.Fatalf("the Secret no longer reads in A: %v", err)
	}
	t.Logf("A still reads it; B's KMS calls: %s", b.api.kmsCalls(t))
}
