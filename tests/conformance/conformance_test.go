// Conformance of a KMS v2 plugin (Trousseau) against the real kube-apiserver
// KMS v2 client code (k8s.io/apiserver), driven through
// encryptionconfig.LoadEncryptionConfig exactly as kube-apiserver does.
//
// Environment:
//
//	TROUSSEAU_SOCKET          absolute path of the plugin's Unix socket (required)
//	TROUSSEAU_ROTATE_CMD      shell command (sh -c) that rotates the Transit key (required for the rotation step)
//	TROUSSEAU_PROVIDER_NAME   KMS provider name (default "trousseau")
//	TROUSSEAU_HEALTH_TIMEOUT  how long to wait for the health check (Go duration, default 20s)
//	TROUSSEAU_ROTATE_TIMEOUT  how long to wait for a new key_id after rotation (Go duration, default 60s)
package conformance

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"trousseau/tests/conformance/internal/kmsharness"
)

type envConfig struct {
	socket        string
	name          string
	rotateCmd     string
	healthTimeout time.Duration
	rotateTimeout time.Duration
}

func loadEnv(t *testing.T) envConfig {
	t.Helper()
	c := envConfig{
		socket:    os.Getenv("TROUSSEAU_SOCKET"),
		name:      os.Getenv("TROUSSEAU_PROVIDER_NAME"),
		rotateCmd: os.Getenv("TROUSSEAU_ROTATE_CMD"),
	}
	if c.socket == "" {
		t.Fatal("TROUSSEAU_SOCKET is not set: set it to the absolute path of the plugin's Unix socket " +
			"(this suite fails rather than skips, so a missing plugin can never look green)")
	}
	if !filepath.IsAbs(c.socket) {
		t.Fatalf("TROUSSEAU_SOCKET=%q is not an absolute path", c.socket)
	}
	if c.name == "" {
		c.name = kmsharness.DefaultProviderName
	}
	c.healthTimeout = envDuration(t, "TROUSSEAU_HEALTH_TIMEOUT", 20*time.Second)
	c.rotateTimeout = envDuration(t, "TROUSSEAU_ROTATE_TIMEOUT", 60*time.Second)
	return c
}

func envDuration(t *testing.T, key string, def time.Duration) time.Duration {
	t.Helper()
	v := os.Getenv(key)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		t.Fatalf("%s=%q is not a positive Go duration (e.g. 90s)", key, v)
	}
	return d
}

func describeSocket(path string) string {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Sprintf("socket %s: %v", path, err)
	}
	if fi.Mode()&os.ModeSocket == 0 {
		return fmt.Sprintf("%s exists but is not a socket (mode %s)", path, fi.Mode())
	}
	return fmt.Sprintf("socket %s exists (mode %s)", path, fi.Mode().Perm())
}

// stored is one value written through the transformer, as etcd would hold it.
type stored struct {
	key       string // etcd key, used as authenticated data
	plaintext []byte
	value     []byte
	keyID     string
}

func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatalf("crypto/rand: %v", err)
	}
	return b
}

func sampleSecretJSON(name, token string) []byte {
	return []byte(fmt.Sprintf(`{"kind":"Secret","apiVersion":"v1","metadata":{"name":%q,"namespace":"default"},"type":"Opaque","stringData":{"token":%q}}`, name, token))
}

func TestKMSv2Conformance(t *testing.T) {
	env := loadEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)

	t.Logf("provider %q, %s", env.name, describeSocket(env.socket))
	cfgPath, err := kmsharness.WriteEncryptionConfig(t.TempDir(), env.name, env.socket, kmsharness.DefaultTimeout)
	if err != nil {
		t.Fatal(err)
	}
	cfgYAML, _ := os.ReadFile(cfgPath)
	t.Logf("wrote EncryptionConfiguration %s:\n%s", cfgPath, cfgYAML)

	// Every session is closed at the end (Close is idempotent), so no status
	// poller or gRPC connection outlives the test.
	var sessions []*kmsharness.Session
	t.Cleanup(func() {
		for _, s := range sessions {
			s.Close()
		}
	})
	load := func(t *testing.T) (*kmsharness.Session, error) {
		s, err := kmsharness.Load(ctx, cfgPath, env.name)
		if err == nil {
			sessions = append(sessions, s)
		}
		return s, err
	}

	start := time.Now()
	sess, err := load(t)
	if err != nil {
		t.Fatalf("LoadEncryptionConfig failed: %v", err)
	}
	t.Logf("LoadEncryptionConfig returned in %s (it calls Status, and Encrypt for a DEK seed, once inline); %d health check(s): %v",
		time.Since(start).Round(time.Millisecond), len(sess.Config.HealthChecks), sess.HealthCheckNames())

	prefix := kmsharness.Prefix(env.name)
	var (
		keyID1  string
		dekSrc1 []byte
		values  []stored
	)
	cur := sess // the newest working session
	mustStep := func(name string, f func(t *testing.T)) {
		if !t.Run(name, f) {
			t.FailNow() // later steps depend on this one
		}
	}

	mustStep("a_health_check", func(t *testing.T) {
		t.Logf("polling the KMS health check(s) of the loaded config (up to %s)", env.healthTimeout)
		start := time.Now()
		attempts, err := sess.WaitHealthy(ctx, env.healthTimeout, 500*time.Millisecond)
		if err != nil {
			t.Fatalf("%v\n(%s)", err, describeSocket(env.socket))
		}
		t.Logf("health check passed after %d attempt(s), %s: plugin Status is healthz=ok, version v2, valid key_id, and a DEK seed was wrapped with that key_id",
			attempts, time.Since(start).Round(time.Millisecond))
	})

	mustStep("b_round_trip", func(t *testing.T) {
		marker := "conformance-plaintext-marker-" + fmt.Sprintf("%x", randomBytes(t, 8))
		key := kmsharness.SecretKey("default", "x")
		pt := sampleSecretJSON("x", marker)
		out, err := sess.Encrypt(ctx, key, pt)
		if err != nil {
			t.Fatalf("TransformToStorage: %v", err)
		}
		t.Logf("TransformToStorage(%d-byte Secret, key %s) -> %d bytes starting %q", len(pt), key, len(out), kmsharness.Head(out, len(prefix)))
		if !bytes.HasPrefix(out, []byte(prefix)) {
			t.Fatalf("stored value does not start with %q: %q", prefix, kmsharness.Head(out, 40))
		}
		if bytes.Contains(out, []byte(marker)) {
			t.Fatalf("stored value contains the plaintext marker: not encrypted")
		}
		got, stale, err := sess.Decrypt(ctx, key, out)
		if err != nil {
			t.Fatalf("TransformFromStorage: %v", err)
		}
		if !bytes.Equal(got, pt) {
			t.Fatalf("TransformFromStorage returned %q, want %q", kmsharness.Head(got, 80), kmsharness.Head(pt, 80))
		}
		if stale {
			t.Fatalf("TransformFromStorage reported stale=true for a value just written with the current key")
		}
		t.Logf("TransformFromStorage -> original plaintext, stale=false")
		values = append(values, stored{key: key, plaintext: pt, value: out})
	})

	mustStep("c_encrypted_object", func(t *testing.T) {
		obj, err := kmsharness.DecodeStored(env.name, values[0].value)
		if err != nil {
			t.Fatal(err)
		}
		keyID1 = obj.KeyID
		dekSrc1 = obj.EncryptedDEKSource
		values[0].keyID = obj.KeyID
		t.Logf("EncryptedObject: key_id=%q (%d bytes), EncryptedDEKSourceType=%s, EncryptedDEKSource=%q (%d bytes), annotations=%d, EncryptedData=%d bytes",
			obj.KeyID, len(obj.KeyID), obj.EncryptedDEKSourceType, kmsharness.Head(obj.EncryptedDEKSource, 24), len(obj.EncryptedDEKSource), len(obj.Annotations), len(obj.EncryptedData))
		if keyID1 == "" {
			t.Fatal("key_id is empty")
		}
		if len(keyID1) > 1024 {
			t.Fatalf("key_id is %d bytes, more than 1024", len(keyID1))
		}
		if !bytes.HasPrefix(obj.EncryptedDEKSource, []byte("vault:v")) {
			t.Fatalf("EncryptedDEKSource does not start with \"vault:v\" (Transit ciphertext expected): %q", kmsharness.Head(obj.EncryptedDEKSource, 24))
		}
		if len(obj.EncryptedDEKSource) > 1024 {
			t.Fatalf("EncryptedDEKSource is %d bytes, more than 1024", len(obj.EncryptedDEKSource))
		}
		for k := range obj.Annotations {
			t.Logf("annotation %q (%d bytes)", k, len(obj.Annotations[k]))
		}
		t.Logf("recorded key_id_1=%q (Transit key version v%s)", keyID1, kmsharness.TransitVersion(obj.EncryptedDEKSource))
	})

	mustStep("d_many_values", func(t *testing.T) {
		sizes := []int{0, 1, 2, 15, 16, 17, 31, 32, 33, 100, 255, 256, 1000, 1024, 4096, 10000, 32768, 65535, 65536, 65536}
		for i, n := range sizes {
			key := kmsharness.SecretKey("conformance", fmt.Sprintf("s-%02d", i))
			pt := randomBytes(t, n)
			if i == len(sizes)-1 {
				pt = bytes.Repeat([]byte{'A'}, n) // a low-entropy 64 KiB value too
			}
			out, err := sess.Encrypt(ctx, key, pt)
			if err != nil {
				t.Fatalf("write %d (%d bytes): TransformToStorage: %v", i, n, err)
			}
			obj, err := kmsharness.DecodeStored(env.name, out)
			if err != nil {
				t.Fatalf("write %d (%d bytes): %v", i, n, err)
			}
			if obj.KeyID != keyID1 {
				t.Fatalf("write %d: key_id %q differs from key_id_1 %q although nothing was rotated", i, obj.KeyID, keyID1)
			}
			if !bytes.Equal(obj.EncryptedDEKSource, dekSrc1) {
				t.Errorf("write %d: a different EncryptedDEKSource than the first write (the client should reuse one DEK seed while key_id is unchanged)", i)
			}
			values = append(values, stored{key: key, plaintext: pt, value: out, keyID: obj.KeyID})
		}
		t.Logf("wrote %d values (sizes %v bytes), all with key_id_1 and one shared DEK seed", len(sizes), sizes)
		for i, v := range values {
			got, stale, err := sess.Decrypt(ctx, v.key, v.value)
			if err != nil {
				t.Fatalf("read %d (%s): %v", i, v.key, err)
			}
			if !bytes.Equal(got, v.plaintext) {
				t.Fatalf("read %d (%s): plaintext mismatch (%d bytes, want %d)", i, v.key, len(got), len(v.plaintext))
			}
			if stale {
				t.Fatalf("read %d (%s): stale=true before any rotation", i, v.key)
			}
		}
		t.Logf("read all %d values back: plaintexts match, stale=false", len(values))
	})

	t.Run("e_rotation", func(t *testing.T) {
		if env.rotateCmd == "" {
			t.Fatal("TROUSSEAU_ROTATE_CMD is not set: it must be a shell command that rotates the Transit key")
		}
		t.Logf("running TROUSSEAU_ROTATE_CMD: %s", env.rotateCmd)
		cmdCtx, cmdCancel := context.WithTimeout(ctx, 60*time.Second)
		out, err := exec.CommandContext(cmdCtx, "sh", "-c", env.rotateCmd).CombinedOutput()
		cmdCancel()
		if s := strings.TrimSpace(string(out)); s != "" {
			t.Logf("rotate command output: %s", kmsharness.Head([]byte(s), 500))
		}
		if err != nil {
			t.Fatalf("TROUSSEAU_ROTATE_CMD failed: %v", err)
		}
		t.Logf("rotate command exited 0; reloading the encryption config (new transformers) until a new write carries a new key_id (up to %s)", env.rotateTimeout)

		var (
			newSess *kmsharness.Session
			newVal  stored
			newObj  []byte
		)
		deadline := time.Now().Add(env.rotateTimeout)
		start := time.Now()
		for attempt := 1; ; attempt++ {
			if attempt > 1 {
				if time.Now().After(deadline) {
					t.Fatalf("key_id never changed from key_id_1=%q within %s after rotation (%d attempts); "+
						"does the plugin's Status pick up the new key version within that time? (TROUSSEAU_ROTATE_TIMEOUT raises the limit)",
						keyID1, env.rotateTimeout, attempt-1)
				}
				time.Sleep(time.Second)
			}
			s, err := load(t)
			if err != nil {
				t.Logf("attempt %d: LoadEncryptionConfig: %v", attempt, err)
				continue
			}
			key := kmsharness.SecretKey("default", fmt.Sprintf("after-rotation-%d", attempt))
			pt := sampleSecretJSON(fmt.Sprintf("after-rotation-%d", attempt), fmt.Sprintf("%x", randomBytes(t, 16)))
			v, err := s.Encrypt(ctx, key, pt)
			if err != nil {
				// e.g. Status and Encrypt disagreed on key_id, so the client did not adopt a DEK seed yet
				t.Logf("attempt %d: write not possible yet (the client adopts a DEK seed only when Encrypt's key_id equals Status' key_id): %v", attempt, err)
				s.Close()
				continue
			}
			obj, err := kmsharness.DecodeStored(env.name, v)
			if err != nil {
				s.Close()
				t.Fatalf("attempt %d: %v", attempt, err)
			}
			if obj.KeyID == keyID1 {
				t.Logf("attempt %d: write still uses key_id_1 (plugin Status has not reported the new key yet)", attempt)
				s.Close()
				continue
			}
			newSess, newVal, newObj = s, stored{key: key, plaintext: pt, value: v, keyID: obj.KeyID}, obj.EncryptedDEKSource
			t.Logf("attempt %d (%s after rotation): new key_id_2=%q (Transit v%s, was v%s), EncryptedDEKSource %q",
				attempt, time.Since(start).Round(time.Millisecond), obj.KeyID, kmsharness.TransitVersion(obj.EncryptedDEKSource),
				kmsharness.TransitVersion(dekSrc1), kmsharness.Head(obj.EncryptedDEKSource, 24))
			break
		}
		// the old transformers are no longer needed: stop their poller and connection
		sess.Close()
		cur = newSess
		t.Logf("closed the pre-rotation transformers")

		if newVal.keyID == keyID1 || newVal.keyID == "" || len(newVal.keyID) > 1024 {
			t.Fatalf("bad key_id after rotation: %q (key_id_1 %q)", newVal.keyID, keyID1)
		}
		if !bytes.HasPrefix(newObj, []byte("vault:v")) {
			t.Fatalf("post-rotation EncryptedDEKSource does not start with \"vault:v\": %q", kmsharness.Head(newObj, 24))
		}

		for i, v := range values {
			got, stale, err := newSess.Decrypt(ctx, v.key, v.value)
			if err != nil {
				t.Fatalf("old value %d (%s, key_id_1) with the new transformer: %v", i, v.key, err)
			}
			if !bytes.Equal(got, v.plaintext) {
				t.Fatalf("old value %d (%s): plaintext mismatch", i, v.key)
			}
			if !stale {
				t.Fatalf("old value %d (%s): stale=false, want true (written with key_id_1, current key is key_id_2)", i, v.key)
			}
		}
		t.Logf("new transformer read all %d pre-rotation values: plaintexts match, stale=true (the plugin decrypted with the old key version)", len(values))

		got, stale, err := newSess.Decrypt(ctx, newVal.key, newVal.value)
		if err != nil {
			t.Fatalf("post-rotation value: %v", err)
		}
		if !bytes.Equal(got, newVal.plaintext) || stale {
			t.Fatalf("post-rotation value: match=%v stale=%v, want match and stale=false", bytes.Equal(got, newVal.plaintext), stale)
		}
		t.Logf("post-rotation value reads back with stale=false")
	})

	// Negative checks run last, with the newest working transformers (after a
	// successful rotation that is the post-rotation session).
	t.Run("f_negative", func(t *testing.T) {
		base := values[1]
		obj, err := kmsharness.DecodeStored(env.name, base.value)
		if err != nil {
			t.Fatal(err)
		}
		orig := obj.EncryptedDEKSource
		src := append([]byte(nil), orig...)
		// Change bytes in the middle of the ciphertext body (after "vault:vN:"),
		// staying inside the base64 alphabet so that the KMS's integrity check,
		// not its parser, is what must refuse it; not at the end, where base64
		// padding bits could make a change a no-op.
		body := bytes.LastIndexByte(src, ':') + 1
		mid := body + (len(src)-body)/2
		for _, i := range []int{mid - 3, mid, mid + 3} {
			if i >= body && i < len(src) {
				if src[i] == 'A' {
					src[i] = 'B'
				} else {
					src[i] = 'A'
				}
			}
		}
		obj.EncryptedDEKSource = src
		corrupted, err := kmsharness.EncodeStored(env.name, obj)
		if err != nil {
			t.Fatal(err)
		}
		lo, hi := max(body, mid-3), min(len(src), mid+4)
		t.Logf("corrupted EncryptedDEKSource %q...: bytes %d..%d %q -> %q, re-marshalled and re-prefixed",
			src[:body], lo, hi-1, orig[lo:hi], src[lo:hi])
		got, _, err := cur.Decrypt(ctx, base.key, corrupted)
		if err == nil {
			t.Errorf("TransformFromStorage accepted a value with a corrupted EncryptedDEKSource (returned %d bytes)", len(got))
		} else if strings.Contains(err.Error(), "PANIC") {
			t.Errorf("TransformFromStorage panicked on a corrupted EncryptedDEKSource: %v", err)
		} else {
			t.Logf("corrupted EncryptedDEKSource refused: %v", err)
		}

		other := "not-" + env.name
		foreign := append([]byte(kmsharness.Prefix(other)), base.value[len(prefix):]...)
		if _, _, err := cur.Decrypt(ctx, base.key, foreign); err == nil {
			t.Errorf("a value with the unknown provider prefix %q was accepted", kmsharness.Prefix(other))
		} else {
			t.Logf("value with unknown provider prefix %q refused: %v", kmsharness.Prefix(other), err)
		}

		wrongKey := kmsharness.SecretKey("default", "not-"+strings.TrimPrefix(base.key, "/registry/secrets/"))
		if _, _, err := cur.Decrypt(ctx, wrongKey, base.value); err == nil {
			t.Errorf("a value read under another etcd key (authenticated data) was accepted")
		} else {
			t.Logf("value read under another etcd key refused (authenticated data binds it to its key): %v", err)
		}

		if got, _, err := cur.Decrypt(ctx, base.key, base.value); err != nil || !bytes.Equal(got, base.plaintext) {
			t.Errorf("the untouched value no longer reads back: err=%v", err)
		} else {
			t.Logf("the untouched original still reads back after the failures")
		}
	})
}
