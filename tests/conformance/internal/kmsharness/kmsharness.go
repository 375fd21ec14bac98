// Package kmsharness drives a KMS v2 plugin through the real Kubernetes client
// code in k8s.io/apiserver, the way kube-apiserver does: it writes an
// EncryptionConfiguration file, loads it with encryptionconfig.LoadEncryptionConfig,
// and uses the resulting storage transformer for "secrets" and the KMS health
// checks. It contains no KMS protocol code of its own.
package kmsharness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apiserver/pkg/server/options/encryptionconfig"
	"k8s.io/apiserver/pkg/storage/value"
	kmstypes "k8s.io/apiserver/pkg/storage/value/encrypt/envelope/kmsv2/v2"
)

const (
	// DefaultProviderName is the KMS provider name used when none is configured.
	DefaultProviderName = "trousseau"
	// DefaultTimeout is the per-RPC timeout written into the EncryptionConfiguration.
	DefaultTimeout = 3 * time.Second
	// APIServerID is the apiServerID handed to LoadEncryptionConfig (kube-apiserver
	// passes its own server ID; it is only used for metrics labels).
	APIServerID = "trousseau-conformance"
	// KMSv2PrefixBase is the storage prefix kube-apiserver writes before the provider name.
	KMSv2PrefixBase = "k8s:enc:kms:v2:"
)

// SecretsGR is the group resource of core/v1 Secrets.
var SecretsGR = schema.GroupResource{Group: "", Resource: "secrets"}

// Prefix returns the storage prefix of values written by the KMS v2 provider name.
func Prefix(name string) string { return KMSv2PrefixBase + name + ":" }

// EncryptionConfigYAML renders the EncryptionConfiguration kube-apiserver would be
// given: the KMS v2 provider first (used for writes), then identity (reads of
// unencrypted legacy data).
func EncryptionConfigYAML(name, socketPath string, timeout time.Duration) (string, error) {
	if name == "" || strings.Contains(name, ":") {
		return "", fmt.Errorf("invalid KMS provider name %q (must be non-empty, without ':')", name)
	}
	if !filepath.IsAbs(socketPath) {
		return "", fmt.Errorf("socket path %q must be absolute", socketPath)
	}
	return fmt.Sprintf(`apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
  - resources:
      - secrets
    providers:
      - kms:
          apiVersion: v2
          name: %s
          endpoint: unix://%s
          timeout: %s
      - identity: {}
`, name, socketPath, timeout.String()), nil
}

// WriteEncryptionConfig writes the EncryptionConfiguration to dir and returns its path.
func WriteEncryptionConfig(dir, name, socketPath string, timeout time.Duration) (string, error) {
	y, err := EncryptionConfigYAML(name, socketPath, timeout)
	if err != nil {
		return "", err
	}
	p := filepath.Join(dir, "encryption-config.yaml")
	if err := os.WriteFile(p, []byte(y), 0o600); err != nil {
		return "", fmt.Errorf("write encryption config: %w", err)
	}
	return p, nil
}

// Session is one loaded EncryptionConfiguration: its transformers, health checks
// and the background goroutines (status polling, gRPC connection) that
// LoadEncryptionConfig started under a context owned by the session.
type Session struct {
	Name      string
	Config    *encryptionconfig.EncryptionConfiguration
	Secrets   value.Transformer // transformer for {"" , "secrets"}, as the storage layer sees it
	cancel    context.CancelFunc
	closeOnce sync.Once
}

// Load calls encryptionconfig.LoadEncryptionConfig exactly as kube-apiserver does
// without automatic reload (reload=false), under a child context of parent that
// Close cancels. Note that LoadEncryptionConfig calls the plugin's Status (and,
// if that is healthy, Encrypt for a new DEK seed) synchronously once before it
// returns; a failure there is not an error but is retried in the background.
func Load(parent context.Context, configPath, name string) (*Session, error) {
	ctx, cancel := context.WithCancel(parent)
	cfg, err := encryptionconfig.LoadEncryptionConfig(ctx, configPath, false, APIServerID)
	if err != nil {
		cancel() // the caller must cancel to clean up goroutines that may have been started
		return nil, fmt.Errorf("LoadEncryptionConfig: %w", err)
	}
	tr := encryptionconfig.StaticTransformers(cfg.Transformers).TransformerForResource(SecretsGR)
	return &Session{Name: name, Config: cfg, Secrets: tr, cancel: cancel}, nil
}

// Close stops the session's background goroutines and closes its gRPC connection.
func (s *Session) Close() {
	if s == nil {
		return
	}
	s.closeOnce.Do(s.cancel)
}

// CheckHealth runs every KMS health check of the loaded config once, as the
// /readyz and /healthz endpoints of kube-apiserver do.
func (s *Session) CheckHealth(ctx context.Context) error {
	if len(s.Config.HealthChecks) == 0 {
		return errors.New("the loaded encryption config has no KMS health checks")
	}
	var errs []error
	for _, hc := range s.Config.HealthChecks {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "/readyz/"+hc.Name(), nil)
		if err != nil {
			return err
		}
		if err := hc.Check(req); err != nil {
			errs = append(errs, fmt.Errorf("health check %q: %w", hc.Name(), err))
		}
	}
	return errors.Join(errs...)
}

// HealthCheckNames lists the names of the loaded config's health checks.
func (s *Session) HealthCheckNames() []string {
	var names []string
	for _, hc := range s.Config.HealthChecks {
		names = append(names, hc.Name())
	}
	return names
}

// WaitHealthy polls CheckHealth every interval until it passes or timeout passes.
// It returns the number of attempts and, on timeout, the last error.
func (s *Session) WaitHealthy(ctx context.Context, timeout, interval time.Duration) (int, error) {
	deadline := time.Now().Add(timeout)
	attempts := 0
	for {
		attempts++
		err := s.CheckHealth(ctx)
		if err == nil {
			return attempts, nil
		}
		if time.Now().Add(interval).After(deadline) {
			return attempts, fmt.Errorf("KMS health check still failing after %s (%d attempts): %w", timeout, attempts, err)
		}
		select {
		case <-ctx.Done():
			return attempts, ctx.Err()
		case <-time.After(interval):
		}
	}
}

// DataContext returns the authenticated data kube-apiserver uses for a value:
// its etcd key.
func DataContext(etcdKey string) value.Context { return value.DefaultContext(etcdKey) }

// SecretKey returns the etcd key kube-apiserver uses for a Secret.
func SecretKey(namespace, name string) string {
	return "/registry/secrets/" + namespace + "/" + name
}

// Encrypt transforms plaintext to its stored form.
func (s *Session) Encrypt(ctx context.Context, etcdKey string, plaintext []byte) ([]byte, error) {
	return s.Secrets.TransformToStorage(ctx, plaintext, DataContext(etcdKey))
}

// Decrypt transforms a stored value back to plaintext. A panic inside the
// transformer is turned into an error so callers can report it.
func (s *Session) Decrypt(ctx context.Context, etcdKey string, stored []byte) (out []byte, stale bool, err error) {
	defer func() {
		if r := recover(); r != nil {
			out, stale, err = nil, false, fmt.Errorf("PANIC in TransformFromStorage: %v", r)
		}
	}()
	return s.Secrets.TransformFromStorage(ctx, stored, DataContext(etcdKey))
}

// DecodeStored strips the provider prefix and decodes the kmsv2 EncryptedObject.
func DecodeStored(name string, stored []byte) (*kmstypes.EncryptedObject, error) {
	p := []byte(Prefix(name))
	if !bytes.HasPrefix(stored, p) {
		return nil, fmt.Errorf("stored value does not start with %q (starts with %q)", p, Head(stored, len(p)))
	}
	obj := &kmstypes.EncryptedObject{}
	if err := proto.Unmarshal(stored[len(p):], obj); err != nil {
		return nil, fmt.Errorf("decode EncryptedObject: %w", err)
	}
	return obj, nil
}

// EncodeStored marshals an EncryptedObject and prepends the provider prefix.
func EncodeStored(name string, obj *kmstypes.EncryptedObject) ([]byte, error) {
	b, err := proto.Marshal(obj)
	if err != nil {
		return nil, err
	}
	return append([]byte(Prefix(name)), b...), nil
}

// Head returns at most n leading bytes of b as a string, with "..." when cut.
func Head(b []byte, n int) string {
	if len(b) <= n {
		return string(b)
	}
	return string(b[:n]) + "..."
}

// TransitVersion returns N of a "vault:vN:..." Transit ciphertext, or "" if it has no such prefix.
func TransitVersion(ciphertext []byte) string {
	s := string(ciphertext)
	if !strings.HasPrefix(s, "vault:v") {
		return ""
	}
	rest := s[len("vault:v"):]
	i := strings.IndexByte(rest, ':')
	if i <= 0 {
		return ""
	}
	return rest[:i]
}
