package e2e

// Every shipped manifest, strictly decoded against the real Kubernetes types: an unknown
// or duplicated field, a misspelt key or a wrong kind is an error, as it would be for
// `kubectl apply --validate=strict`, kubeadm or kube-apiserver (which silently ignore
// what they do not know). Needs no binary and no plugin.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	kjson "k8s.io/apimachinery/pkg/runtime/serializer/json"
	apiserverv1 "k8s.io/apiserver/pkg/apis/apiserver/v1"
	kubeadmv1beta4 "k8s.io/kubernetes/cmd/kubeadm/app/apis/kubeadm/v1beta4"
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// repoRoot is the repository, two levels above this module.
func repoRoot(t *testing.T) string {
	t.Helper()
	abs, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	return abs
}

var strictScheme = func() *runtime.Scheme {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		corev1.AddToScheme, apiserverv1.AddToScheme, kubeadmv1beta4.AddToScheme,
	} {
		if err := add(s); err != nil {
			panic(err)
		}
	}
	return s
}()

// strictDecode decodes one YAML document into the registered type its apiVersion/kind
// names, and fails on any field the type does not have (or has twice).
func strictDecode(data []byte, want schema.GroupVersionKind) (runtime.Object, error) {
	ser := kjson.NewSerializerWithOptions(kjson.DefaultMetaFactory, strictScheme, strictScheme,
		kjson.SerializerOptions{Yaml: true, Strict: true})
	obj, gvk, err := ser.Decode(data, nil, nil)
	if gvk != nil && *gvk != want {
		return nil, fmt.Errorf("decoded as %s, want %s", gvk, want)
	}
	if err != nil {
		return nil, err // strict errors come back here too (runtime.IsStrictDecodingError)
	}
	return obj, nil
}

// jsonPatchOp is one RFC 6902 operation as kubeadm's --patches reads it.
type jsonPatchOp struct {
	Op    string          `json:"op"`
	Path  string          `json:"path"`
	Value json.RawMessage `json:"value,omitempty"`
	From  string          `json:"from,omitempty"`
}

// strictJSONInto decodes raw into out as Kubernetes does (sigs.k8s.io/json: field names are
// case-sensitive), rejecting unknown and duplicate fields.
func strictJSONInto(raw []byte, out any) error {
	strict, err := sigsjson.UnmarshalStrict(raw, out)
	if err != nil {
		return err
	}
	if len(strict) > 0 {
		return fmt.Errorf("%v", strict)
	}
	return nil
}

// checkAPIServerPatch validates a kube-apiserver+json.yaml patch: a list of RFC 6902
// operations whose values strictly decode to the type at their path in a Pod.
func checkAPIServerPatch(data []byte) error {
	var ops []jsonPatchOp
	js, err := yaml.YAMLToJSONStrict(data) // duplicate keys are errors
	if err == nil {
		err = strictJSONInto(js, &ops)
	}
	if err != nil {
		return fmt.Errorf("not a JSON patch: %w", err)
	}
	if len(ops) == 0 {
		return fmt.Errorf("empty patch")
	}
	for i, op := range ops {
		if op.Op != "add" {
			return fmt.Errorf("op %d: %q: the patch only appends (add), it must not replace or remove what kubeadm generates", i, op.Op)
		}
		var err error
		switch op.Path {
		case "/spec/containers/0/command/-":
			var s string
			err = strictJSONInto(op.Value, &s)
			if err == nil && !strings.HasPrefix(s, "--") {
				err = fmt.Errorf("%q is not a flag", s)
			}
		case "/spec/containers/0/volumeMounts/-":
			err = strictJSONInto(op.Value, &corev1.VolumeMount{})
		case "/spec/volumes/-":
			err = strictJSONInto(op.Value, &corev1.Volume{})
		default:
			err = fmt.Errorf("unexpected path")
		}
		if err != nil {
			return fmt.Errorf("op %d (%s %s): %w", i, op.Op, op.Path, err)
		}
	}
	return nil
}

// shippedManifests maps each file under manifests/ to what it must decode to. A new file
// must be added here (the test fails on an unclassified one).
var shippedManifests = map[string]schema.GroupVersionKind{
	"trousseau.yaml":                     corev1.SchemeGroupVersion.WithKind("Pod"),
	"encryption-config.yaml":             apiserverv1.SchemeGroupVersion.WithKind("EncryptionConfiguration"),
	"kubeadm/cluster-configuration.yaml": kubeadmv1beta4.SchemeGroupVersion.WithKind("ClusterConfiguration"),
	"kubeadm/kube-apiserver+json.yaml":   {}, // a kubeadm patch: checkAPIServerPatch
	// not a Kubernetes object: the plugin's own config, checked by `trousseau check-config`
	// (tests/integration/test_deploy.py::test_example_config_passes_check_config)
	"config.yaml": {Kind: "trousseau-config"},
}

func checkManifest(rel string, data []byte) error {
	want, ok := shippedManifests[rel]
	switch {
	case !ok:
		return fmt.Errorf("manifests/%s is not classified in shippedManifests", rel)
	case want.Kind == "trousseau-config":
		return nil
	case want.Empty():
		return checkAPIServerPatch(data)
	}
	_, err := strictDecode(data, want)
	return err
}

func readManifests(t *testing.T) map[string][]byte {
	t.Helper()
	dir := filepath.Join(repoRoot(t), "manifests")
	out := map[string][]byte{}
	for _, pat := range []string{"*.yaml", "kubeadm/*.yaml"} {
		files, err := filepath.Glob(filepath.Join(dir, pat))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			rel, _ := filepath.Rel(dir, f)
			out[rel] = b
		}
	}
	if len(out) != len(shippedManifests) {
		t.Errorf("found %d manifests, %d classified: %v", len(out), len(shippedManifests), sortedKeys(out))
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	k := make([]string, 0, len(m))
	for s := range m {
		k = append(k, s)
	}
	sort.Strings(k)
	return k
}

func TestShippedManifestsDecodeStrictly(t *testing.T) {
	for _, rel := range sortedKeys(readManifests(t)) {
		data := readManifests(t)[rel]
		if err := checkManifest(rel, data); err != nil {
			t.Errorf("manifests/%s: %v", rel, err)
			continue
		}
		t.Logf("manifests/%s: ok (%s)", rel, describeKind(shippedManifests[rel]))
	}
}

func describeKind(g schema.GroupVersionKind) string {
	switch {
	case g.Kind == "trousseau-config":
		return "plugin config, checked by trousseau check-config"
	case g.Empty():
		return "RFC 6902 patch of a core/v1 Pod"
	}
	return g.String()
}

// Each mutation breaks one shipped manifest in one way; every one must be rejected.
func TestStrictDecodingRejectsBrokenManifests(t *testing.T) {
	m := readManifests(t)
	cases := []struct {
		name, file, old, new, wantErr string
	}{
		{"pod: unknown field in the securityContext", "trousseau.yaml",
			"readOnlyRootFilesystem: true", "readOnlyRootFilesystem: true\n        readOnlyRootFS: true", "unknown field"},
		{"pod: misspelt key (case matters)", "trousseau.yaml",
			"hostNetwork: true", "hostnetwork: true", "unknown field"},
		{"pod: duplicated key", "trousseau.yaml",
			"enableServiceLinks: false", "enableServiceLinks: false\n  enableServiceLinks: true", "already set"},
		{"pod: wrong type", "trousseau.yaml",
			"priorityClassName: system-node-critical", "priorityClassName: [system-node-critical]", "cannot unmarshal"},
		{"pod: wrong kind for the file", "trousseau.yaml",
			"kind: Pod", "kind: Service", "decoded as"},
		{"EncryptionConfiguration: unknown provider field", "encryption-config.yaml",
			"timeout: 3s", "timeout: 3s\n          retries: 3", "unknown field"},
		{"EncryptionConfiguration: v1 field misspelt", "encryption-config.yaml",
			"endpoint: unix://", "endPoint: unix://", "unknown field"},
		{"ClusterConfiguration: v1beta3 map form of extraArgs", "kubeadm/cluster-configuration.yaml",
			"    - name: encryption-provider-config\n      value: /etc/kubernetes/enc/encryption-config.yaml\n" +
				"    - name: encryption-provider-config-automatic-reload\n      value: \"true\"\n",
			"    encryption-provider-config: /etc/kubernetes/enc/encryption-config.yaml\n" +
				"    encryption-provider-config-automatic-reload: \"true\"\n", "cannot unmarshal"},
		{"ClusterConfiguration: unknown volume field", "kubeadm/cluster-configuration.yaml",
			"pathType: DirectoryOrCreate", "pathType: DirectoryOrCreate\n      type: Directory", "unknown field"},
		{"patch: unknown field in a volumeMount", "kubeadm/kube-apiserver+json.yaml",
			"mountPath: /etc/kubernetes/enc\n    readOnly: true", "mountPath: /etc/kubernetes/enc\n    readonly: true", "unknown field"},
		{"patch: unknown field in a volume", "kubeadm/kube-apiserver+json.yaml",
			"      type: DirectoryOrCreate", "      kind: DirectoryOrCreate", "unknown field"},
		{"patch: an op that replaces", "kubeadm/kube-apiserver+json.yaml",
			"- op: add\n  path: /spec/containers/0/command/-", "- op: replace\n  path: /spec/containers/0/command/1", "only appends"},
		{"patch: duplicated key in a volume", "kubeadm/kube-apiserver+json.yaml",
			"    name: trousseau-kmsplugin\n    hostPath:", "    name: trousseau-kmsplugin\n    name: other\n    hostPath:", "already set"},
		{"patch: unknown op key", "kubeadm/kube-apiserver+json.yaml",
			"- op: add\n  path: /spec/volumes/-", "- op: add\n  paht: /spec/volumes/-", "unknown field"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			orig, ok := m[c.file]
			if !ok {
				t.Fatalf("manifests/%s missing", c.file)
			}
			if !bytes.Contains(orig, []byte(c.old)) {
				t.Fatalf("manifests/%s no longer contains %q: update this case", c.file, c.old)
			}
			broken := bytes.Replace(orig, []byte(c.old), []byte(c.new), 1)
			err := checkManifest(c.file, broken)
			if err == nil {
				t.Fatalf("broken manifests/%s accepted", c.file)
			}
			if !strings.Contains(err.Error(), c.wantErr) {
				t.Fatalf("error %q does not say %q", err, c.wantErr)
			}
			t.Logf("rejected: %v", err)
		})
	}
}
