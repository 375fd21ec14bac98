package e2e

// kubeadm itself (cmd/kubeadm, the same k8s.io/kubernetes module as kube-apiserver) renders
// the kube-apiserver static pod offline, five ways:
//
//	base         --config: InitConfiguration + ClusterConfiguration with nothing of ours
//	patch        base + InitConfiguration.patches.directory: manifests/kubeadm
//	config       manifests/kubeadm/cluster-configuration.yaml (+ kubernetesVersion) as the
//	             ClusterConfiguration
//	base-flags   no config file: --kubernetes-version --apiserver-advertise-address
//	patch-flags  base-flags + --patches manifests/kubeadm
//
// (kubeadm refuses `--config` together with `--patches`: with a config file the patches
// directory goes into the InitConfiguration/JoinConfiguration.) The test diffs them: both shipped forms add exactly the encryption flags, the two
// volumes and the two mounts, and leave every flag, volume, mount and other field kubeadm
// generates untouched. TestKubeAPIServerEncryptsSecretsThroughTrousseau starts kube-apiserver
// with the encryption flags taken from the rendered `patch` pod (encryptionWiringFrom).
//
// Environment: TROUSSEAU_E2E_KUBEADM_BIN (default bin/kubeadm; build it with
// go build -o bin/kubeadm ./cmd/kubeadm). No network, no root, nothing written outside a
// temporary directory: `--dry-run` with KUBEADM_INIT_DRYRUN_DIR.

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apiserverv1 "k8s.io/apiserver/pkg/apis/apiserver/v1"
	kubeadmv1beta4 "k8s.io/kubernetes/cmd/kubeadm/app/apis/kubeadm/v1beta4"
	"sigs.k8s.io/yaml"
)

const (
	renderK8sVersion = "v1.37.2" // the module's k8s.io/kubernetes version
	renderAdvertise  = "192.0.2.10"
	apiserverCmdName = "kube-apiserver"
)

// initConfiguration pins everything kubeadm would otherwise look up on this machine or
// online: the advertise address (no interface probing), the node name (no hostname) and
// the CRI socket (no runtime detection); patches, when not empty, is the patches directory.
func initConfiguration(patches string) string {
	s := `apiVersion: kubeadm.k8s.io/v1beta4
kind: InitConfiguration
localAPIEndpoint:
  advertiseAddress: ` + renderAdvertise + `
  bindPort: 6443
nodeRegistration:
  name: cp-1
  criSocket: unix:///run/containerd/containerd.sock
`
	if patches != "" {
		s += "patches:\n  directory: " + patches + "\n"
	}
	return s
}

// renderFlags is the no-config-file form: what kubeadm needs on the command line instead.
var renderFlags = []string{"--kubernetes-version", renderK8sVersion, "--apiserver-advertise-address", renderAdvertise}

const baseClusterConfiguration = `apiVersion: kubeadm.k8s.io/v1beta4
kind: ClusterConfiguration
kubernetesVersion: ` + renderK8sVersion + `
`

func kubeadmBin(t *testing.T) string {
	t.Helper()
	b, err := filepath.Abs(envOr("TROUSSEAU_E2E_KUBEADM_BIN", "bin/kubeadm"))
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(b); err != nil || fi.Mode()&0o111 == 0 {
		t.Fatalf("%s is not an executable (%v): build it first, go build -o bin/kubeadm ./cmd/kubeadm", b, err)
	}
	return b
}

// renderAPIServer runs `kubeadm init phase control-plane apiserver --dry-run` with the given
// kubeadm config file contents (written to a file and passed as --config), or, when config
// is empty, with args alone, and returns the rendered Pod, strictly decoded.
func renderAPIServer(t *testing.T, bin, dir, name, config string, args ...string) (*corev1.Pod, []byte) {
	t.Helper()
	work := filepath.Join(dir, "kubeadm-"+name)
	out := filepath.Join(work, "out")
	if err := os.MkdirAll(out, 0o700); err != nil {
		t.Fatal(err)
	}
	args = append([]string{"init", "phase", "control-plane", "apiserver", "--dry-run"}, args...)
	if config != "" {
		cfg := filepath.Join(work, "kubeadm.yaml")
		if err := os.WriteFile(cfg, []byte(config), 0o600); err != nil {
			t.Fatal(err)
		}
		args = append(args, "--config", cfg)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "KUBEADM_INIT_DRYRUN_DIR="+out)
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	t0 := time.Now()
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("kubeadm %s (%s): %v\n%s", strings.Join(args, " "), name, err, buf.String())
		}
	case <-time.After(2 * time.Minute):
		cmd.Process.Kill()
		t.Fatalf("kubeadm (%s) did not finish within 2 minutes\n%s", name, buf.String())
	}
	manifest := filepath.Join(out, "kube-apiserver.yaml")
	raw, err := os.ReadFile(manifest)
	if err != nil {
		t.Fatalf("kubeadm (%s) wrote no %s: %v\n%s", name, manifest, err, buf.String())
	}
	obj, err := strictDecode(raw, corev1.SchemeGroupVersion.WithKind("Pod"))
	if err != nil {
		t.Fatalf("rendered kube-apiserver manifest (%s) does not decode strictly: %v\n%s", name, err, raw)
	}
	t.Logf("kubeadm %s: rendered in %s", strings.Join(args, " "), time.Since(t0).Round(time.Millisecond))
	return obj.(*corev1.Pod), raw
}

func shippedPatches(t *testing.T) string { return filepath.Join(repoRoot(t), "manifests", "kubeadm") }

// renderPatched renders the kube-apiserver pod from a kubeadm config whose
// InitConfiguration names the shipped patch directory.
func renderPatched(t *testing.T, bin, dir string) *corev1.Pod {
	t.Helper()
	pod, _ := renderAPIServer(t, bin, dir, "patch", initConfiguration(shippedPatches(t))+"---\n"+baseClusterConfiguration)
	return pod
}

// shippedClusterConfiguration is manifests/kubeadm/cluster-configuration.yaml with only the
// kubernetesVersion set (so kubeadm does not ask dl.k8s.io).
func shippedClusterConfiguration(t *testing.T) string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(repoRoot(t), "manifests", "kubeadm", "cluster-configuration.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	obj, err := strictDecode(raw, kubeadmv1beta4.SchemeGroupVersion.WithKind("ClusterConfiguration"))
	if err != nil {
		t.Fatalf("cluster-configuration.yaml: %v", err)
	}
	cc := obj.(*kubeadmv1beta4.ClusterConfiguration)
	if cc.KubernetesVersion != "" {
		t.Fatalf("cluster-configuration.yaml sets kubernetesVersion %q: it is a fragment, leave it out", cc.KubernetesVersion)
	}
	cc.KubernetesVersion = renderK8sVersion
	out, err := yaml.Marshal(cc)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// ---- what a render added -----------------------------------------------------------------

type renderDiff struct {
	flags   []string // added command-line entries, sorted
	volumes []corev1.Volume
	mounts  []corev1.VolumeMount
}

func apiserverContainer(pod *corev1.Pod) (*corev1.Container, error) {
	if len(pod.Spec.Containers) != 1 || pod.Spec.Containers[0].Name != apiserverCmdName {
		return nil, fmt.Errorf("want one container %q, got %d", apiserverCmdName, len(pod.Spec.Containers))
	}
	return &pod.Spec.Containers[0], nil
}

// flagsByName maps "--name" to its whole entry; a flag given twice is an error (the last
// one would silently win over what kubeadm generated).
func flagsByName(cmd []string) (map[string]string, error) {
	m := map[string]string{}
	for _, a := range cmd[1:] {
		name, _, _ := strings.Cut(a, "=")
		if !strings.HasPrefix(name, "--") {
			return nil, fmt.Errorf("%q is not a --flag", a)
		}
		if prev, dup := m[name]; dup {
			return nil, fmt.Errorf("flag %s given twice (%q and %q)", name, prev, a)
		}
		m[name] = a
	}
	return m, nil
}

// diffRender returns what patched adds to base, and an error if it changed or removed
// anything base has: a flag, a volume, a mount, or any other field of the Pod.
func diffRender(base, patched *corev1.Pod) (renderDiff, error) {
	var d renderDiff
	bc, err := apiserverContainer(base)
	if err != nil {
		return d, fmt.Errorf("base: %w", err)
	}
	pc, err := apiserverContainer(patched)
	if err != nil {
		return d, fmt.Errorf("patched: %w", err)
	}
	if len(pc.Command) == 0 || len(bc.Command) == 0 || pc.Command[0] != bc.Command[0] {
		return d, fmt.Errorf("command changed: %q vs %q", bc.Command, pc.Command)
	}
	bf, err := flagsByName(bc.Command)
	if err != nil {
		return d, fmt.Errorf("base: %w", err)
	}
	pf, err := flagsByName(pc.Command)
	if err != nil {
		return d, fmt.Errorf("patched: %w", err)
	}
	var errs []string
	for name, entry := range bf {
		switch got, ok := pf[name]; {
		case !ok:
			errs = append(errs, "flag removed: "+entry)
		case got != entry:
			errs = append(errs, fmt.Sprintf("flag changed: %s -> %s", entry, got))
		}
	}
	for name, entry := range pf {
		if _, ok := bf[name]; !ok {
			d.flags = append(d.flags, entry)
		}
	}
	sort.Strings(d.flags)

	bv := map[string]corev1.Volume{}
	for _, v := range base.Spec.Volumes {
		bv[v.Name] = v
	}
	seen := map[string]bool{}
	for _, v := range patched.Spec.Volumes {
		seen[v.Name] = true
		if b, ok := bv[v.Name]; !ok {
			d.volumes = append(d.volumes, v)
		} else if !apiequality.Semantic.DeepEqual(b, v) {
			errs = append(errs, fmt.Sprintf("volume %s changed: %+v -> %+v", v.Name, b, v))
		}
	}
	for n := range bv {
		if !seen[n] {
			errs = append(errs, "volume removed: "+n)
		}
	}
	bm := map[string]corev1.VolumeMount{}
	for _, m := range bc.VolumeMounts {
		bm[m.Name] = m
	}
	seen = map[string]bool{}
	for _, m := range pc.VolumeMounts {
		seen[m.Name] = true
		if b, ok := bm[m.Name]; !ok {
			d.mounts = append(d.mounts, m)
		} else if !apiequality.Semantic.DeepEqual(b, m) {
			errs = append(errs, fmt.Sprintf("volume mount %s changed: %+v -> %+v", m.Name, b, m))
		}
	}
	for n := range bm {
		if !seen[n] {
			errs = append(errs, "volume mount removed: "+n)
		}
	}
	sort.Slice(d.volumes, func(i, j int) bool { return d.volumes[i].Name < d.volumes[j].Name })
	sort.Slice(d.mounts, func(i, j int) bool { return d.mounts[i].Name < d.mounts[j].Name })

	// Everything else: equal once the three lists are set aside.
	b2, p2 := base.DeepCopy(), patched.DeepCopy()
	for _, p := range []*corev1.Pod{b2, p2} {
		p.Spec.Volumes = nil
		p.Spec.Containers[0].Command = nil
		p.Spec.Containers[0].VolumeMounts = nil
	}
	if !apiequality.Semantic.DeepEqual(b2, p2) {
		bj, _ := yaml.Marshal(b2)
		pj, _ := yaml.Marshal(p2)
		errs = append(errs, fmt.Sprintf("other fields of the Pod changed:\n--- base\n%s\n--- patched\n%s", bj, pj))
	}
	if len(errs) > 0 {
		sort.Strings(errs)
		return d, fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return d, nil
}

// What both shipped forms must add, and nothing else.
var (
	wantAddedFlags = []string{
		"--encryption-provider-config-automatic-reload=true",
		"--encryption-provider-config=/etc/kubernetes/enc/encryption-config.yaml",
	}
	wantAddedVolumes = []corev1.Volume{
		hostPathVolume("trousseau-enc", "/etc/kubernetes/enc"),
		hostPathVolume("trousseau-kmsplugin", "/var/run/kmsplugin"),
	}
	wantAddedMounts = []corev1.VolumeMount{
		{Name: "trousseau-enc", MountPath: "/etc/kubernetes/enc", ReadOnly: true},
		{Name: "trousseau-kmsplugin", MountPath: "/var/run/kmsplugin"},
	}
)

func hostPathVolume(name, path string) corev1.Volume {
	typ := corev1.HostPathDirectoryOrCreate
	return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{
		HostPath: &corev1.HostPathVolumeSource{Path: path, Type: &typ}}}
}

func checkAdded(d renderDiff) error {
	var errs []string
	if !reflect.DeepEqual(d.flags, wantAddedFlags) {
		errs = append(errs, fmt.Sprintf("added flags %q, want %q", d.flags, wantAddedFlags))
	}
	if !apiequality.Semantic.DeepEqual(d.volumes, wantAddedVolumes) {
		errs = append(errs, fmt.Sprintf("added volumes %+v, want %+v", d.volumes, wantAddedVolumes))
	}
	if !apiequality.Semantic.DeepEqual(d.mounts, wantAddedMounts) {
		errs = append(errs, fmt.Sprintf("added mounts %+v, want %+v", d.mounts, wantAddedMounts))
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return nil
}

// ---- the encryption wiring the e2e kube-apiserver takes from the rendered pod ---------------

type encryptionWiring struct {
	flags      []string // every --encryption-provider-config* flag, the config path moved under root
	podPath    string   // --encryption-provider-config as kube-apiserver sees it in the pod
	hostFile   string   // where that file is on the host, under root
	kmsDirHost string   // host directory mounted where the shipped EncryptionConfiguration's socket is
}

// mountedHostPath maps a path inside the kube-apiserver container to the host path of the
// hostPath volume mounted over it (the longest mount that contains it).
func mountedHostPath(pod *corev1.Pod, c *corev1.Container, p string) (string, *corev1.VolumeMount, error) {
	var best *corev1.VolumeMount
	for i := range c.VolumeMounts {
		m := &c.VolumeMounts[i]
		if (p == m.MountPath || strings.HasPrefix(p, strings.TrimSuffix(m.MountPath, "/")+"/")) &&
			(best == nil || len(m.MountPath) > len(best.MountPath)) {
			best = m
		}
	}
	if best == nil {
		return "", nil, fmt.Errorf("%s is not on any volume mounted into kube-apiserver", p)
	}
	for _, v := range pod.Spec.Volumes {
		if v.Name == best.Name {
			if v.HostPath == nil {
				return "", nil, fmt.Errorf("%s: volume %s is not a hostPath", p, v.Name)
			}
			return filepath.Join(v.HostPath.Path, strings.TrimPrefix(p, best.MountPath)), best, nil
		}
	}
	return "", nil, fmt.Errorf("%s: mount %s has no volume", p, best.Name)
}

// encryptionWiringFrom reads the encryption flags of a rendered kube-apiserver pod and the
// host file behind --encryption-provider-config (placed under root), and checks that the
// socket directory the shipped EncryptionConfiguration names is mounted writable.
func encryptionWiringFrom(pod *corev1.Pod, root string, encConfig []byte) (encryptionWiring, error) {
	var w encryptionWiring
	c, err := apiserverContainer(pod)
	if err != nil {
		return w, err
	}
	for _, a := range c.Command[1:] {
		name, val, _ := strings.Cut(a, "=")
		if !strings.HasPrefix(name, "--encryption-provider-config") {
			continue
		}
		if name == "--encryption-provider-config" {
			if w.podPath != "" {
				return w, fmt.Errorf("--encryption-provider-config given twice")
			}
			w.podPath = val
			continue // added below with the host path
		}
		w.flags = append(w.flags, a)
	}
	if w.podPath == "" || !filepath.IsAbs(w.podPath) {
		return w, fmt.Errorf("no absolute --encryption-provider-config in the rendered kube-apiserver command")
	}
	host, _, err := mountedHostPath(pod, c, w.podPath)
	if err != nil {
		return w, err
	}
	w.hostFile = filepath.Join(root, host)
	w.flags = append([]string{"--encryption-provider-config=" + w.hostFile}, w.flags...)

	// The socket the shipped EncryptionConfiguration points kube-apiserver at must be on a
	// writable mount (kube-apiserver connects to it; a read-only mount refuses connect()).
	obj, err := strictDecode(encConfig, apiserverv1.SchemeGroupVersion.WithKind("EncryptionConfiguration"))
	if err != nil {
		return w, fmt.Errorf("EncryptionConfiguration: %w", err)
	}
	ec := obj.(*apiserverv1.EncryptionConfiguration)
	var endpoint string
	for _, r := range ec.Resources {
		for _, p := range r.Providers {
			if p.KMS != nil && p.KMS.Name == providerName {
				endpoint = p.KMS.Endpoint
			}
		}
	}
	sock, ok := strings.CutPrefix(endpoint, "unix://")
	if !ok {
		return w, fmt.Errorf("EncryptionConfiguration: no kms provider %q with a unix:// endpoint", providerName)
	}
	dirHost, m, err := mountedHostPath(pod, c, sock)
	if err != nil {
		return w, fmt.Errorf("plugin socket: %w", err)
	}
	if m.ReadOnly {
		return w, fmt.Errorf("plugin socket %s is on the read-only mount %s", sock, m.Name)
	}
	w.kmsDirHost = filepath.Dir(dirHost)
	return w, nil
}

func readShipped(t *testing.T, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot(t), "manifests", rel))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// ---- the tests -----------------------------------------------------------------------------

func TestKubeadmRendersTheEncryptionWiring(t *testing.T) {
	bin := kubeadmBin(t)
	dir := t.TempDir()
	base, _ := renderAPIServer(t, bin, dir, "base", initConfiguration("")+"---\n"+baseClusterConfiguration)
	patched := renderPatched(t, bin, dir)
	viaConfig, _ := renderAPIServer(t, bin, dir, "config", initConfiguration("")+"---\n"+shippedClusterConfiguration(t))
	baseFlags, _ := renderAPIServer(t, bin, dir, "base-flags", "", renderFlags...)
	patchedFlags, _ := renderAPIServer(t, bin, dir, "patch-flags", "", append(renderFlags, "--patches", shippedPatches(t))...)

	bc, _ := apiserverContainer(base)
	if len(bc.Command) < 20 || !strings.Contains(strings.Join(bc.Command, " "), "--advertise-address="+renderAdvertise) {
		t.Fatalf("the base render does not look like kubeadm's kube-apiserver: %q", bc.Command)
	}
	for _, a := range bc.Command {
		if strings.HasPrefix(a, "--encryption-provider-config") {
			t.Fatalf("the base render already has %s", a)
		}
	}
	t.Logf("base: %d kube-apiserver flags, %d volumes, image %s", len(bc.Command)-1, len(base.Spec.Volumes), bc.Image)

	for _, c := range []struct {
		name          string
		base, patched *corev1.Pod
	}{
		{"InitConfiguration patches.directory: manifests/kubeadm", base, patched},
		{"cluster-configuration.yaml", base, viaConfig},
		{"--patches manifests/kubeadm (no config file)", baseFlags, patchedFlags},
	} {
		name := c.name
		d, err := diffRender(c.base, c.patched)
		if err != nil {
			t.Errorf("%s touched what kubeadm generates: %v", name, err)
			continue
		}
		if err := checkAdded(d); err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		t.Logf("%s: adds exactly %q, volumes and mounts trousseau-enc (ro) and trousseau-kmsplugin; "+
			"the other %d flags, %d volumes and the rest of the Pod unchanged", name, d.flags, len(bc.Command)-1, len(base.Spec.Volumes))
	}

	w, err := encryptionWiringFrom(patched, "/host", readShipped(t, "encryption-config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if w.hostFile != "/host/etc/kubernetes/enc/encryption-config.yaml" || w.kmsDirHost != "/var/run/kmsplugin" {
		t.Fatalf("wiring: EncryptionConfiguration at %s, socket directory %s", w.hostFile, w.kmsDirHost)
	}
	// the plugin's static pod mounts the same host directory for its socket
	plugin, err := strictDecode(readShipped(t, "trousseau.yaml"), corev1.SchemeGroupVersion.WithKind("Pod"))
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, v := range plugin.(*corev1.Pod).Spec.Volumes {
		found = found || (v.HostPath != nil && v.HostPath.Path == w.kmsDirHost)
	}
	if !found {
		t.Errorf("manifests/trousseau.yaml mounts no hostPath %s, where kube-apiserver looks for the socket", w.kmsDirHost)
	}
	t.Logf("wiring: kube-apiserver reads %s (host %s), the plugin socket directory is host %s",
		w.podPath, strings.TrimPrefix(w.hostFile, "/host"), w.kmsDirHost)
}

// A patch that changes what kubeadm generates is caught by kubeadm's own render + diff.
func TestKubeadmRenderDiffCatchesABadPatch(t *testing.T) {
	bin := kubeadmBin(t)
	dir := t.TempDir()
	base, _ := renderAPIServer(t, bin, dir, "base", initConfiguration("")+"---\n"+baseClusterConfiguration)
	bad := filepath.Join(dir, "bad-patches")
	if err := os.MkdirAll(bad, 0o700); err != nil {
		t.Fatal(err)
	}
	patch := string(readShipped(t, "kubeadm/kube-apiserver+json.yaml")) +
		"- op: replace\n  path: /spec/containers/0/command/1\n  value: --advertise-address=198.51.100.1\n" +
		"- op: remove\n  path: /spec/volumes/0\n"
	if err := os.WriteFile(filepath.Join(bad, "kube-apiserver+json.yaml"), []byte(patch), 0o600); err != nil {
		t.Fatal(err)
	}
	got, _ := renderAPIServer(t, bin, dir, "bad-patch", initConfiguration(bad)+"---\n"+baseClusterConfiguration)
	_, err := diffRender(base, got)
	if err == nil {
		t.Fatal("a patch that rewrites --advertise-address and drops a volume passed the diff")
	}
	for _, want := range []string{"flag changed: --advertise-address=" + renderAdvertise, "volume removed: "} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("diff error does not report %q: %v", want, err)
		}
	}
	t.Logf("caught: %.300s", err)
}

// The differ and the wiring reader on hand-made pods (no kubeadm needed).
func TestRenderDiffAndWiringRejectBrokenPods(t *testing.T) {
	typ := corev1.HostPathDirectoryOrCreate
	base := &corev1.Pod{Spec: corev1.PodSpec{
		Containers: []corev1.Container{{Name: apiserverCmdName, Image: "registry.k8s.io/kube-apiserver:v1.37.2",
			Command:      []string{"kube-apiserver", "--a=1", "--b=2"},
			VolumeMounts: []corev1.VolumeMount{{Name: "k8s-certs", MountPath: "/etc/kubernetes/pki", ReadOnly: true}}}},
		Volumes: []corev1.Volume{{Name: "k8s-certs", VolumeSource: corev1.VolumeSource{
			HostPath: &corev1.HostPathVolumeSource{Path: "/etc/kubernetes/pki", Type: &typ}}}},
	}}
	good := base.DeepCopy()
	gc := &good.Spec.Containers[0]
	gc.Command = append(gc.Command, wantAddedFlags...)
	gc.VolumeMounts = append(gc.VolumeMounts, wantAddedMounts...)
	good.Spec.Volumes = append(good.Spec.Volumes, wantAddedVolumes...)
	d, err := diffRender(base, good)
	if err != nil || checkAdded(d) != nil {
		t.Fatalf("the good pod: %v / %v", err, checkAdded(d))
	}
	enc := readShipped(t, "encryption-config.yaml")
	if _, err := encryptionWiringFrom(good, "/r", enc); err != nil {
		t.Fatalf("the good pod's wiring: %v", err)
	}

	mutations := map[string]struct {
		mutate func(p *corev1.Pod)
		want   string
	}{
		"flag changed":           {func(p *corev1.Pod) { p.Spec.Containers[0].Command[1] = "--a=9" }, "flag changed: --a=1 -> --a=9"},
		"flag duplicated":        {func(p *corev1.Pod) { c := &p.Spec.Containers[0]; c.Command = append(c.Command, "--b=3") }, "given twice"},
		"flag removed":           {func(p *corev1.Pod) { c := &p.Spec.Containers[0]; c.Command = append(c.Command[:2], c.Command[3:]...) }, "flag removed: --b=2"},
		"volume changed":         {func(p *corev1.Pod) { p.Spec.Volumes[0].HostPath.Path = "/tmp" }, "volume k8s-certs changed"},
		"mount made writable":    {func(p *corev1.Pod) { p.Spec.Containers[0].VolumeMounts[0].ReadOnly = false }, "volume mount k8s-certs changed"},
		"image changed":          {func(p *corev1.Pod) { p.Spec.Containers[0].Image = "evil" }, "other fields of the Pod changed"},
		"hostNetwork changed":    {func(p *corev1.Pod) { p.Spec.HostNetwork = true }, "other fields of the Pod changed"},
		"second container added": {func(p *corev1.Pod) { p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: "x"}) }, "want one container"},
	}
	for name, m := range mutations {
		p := good.DeepCopy()
		m.mutate(p)
		_, err := diffRender(base, p)
		if err == nil || !strings.Contains(err.Error(), m.want) {
			t.Errorf("%s: diff error %v, want %q", name, err, m.want)
		}
	}

	wiring := map[string]struct {
		mutate func(p *corev1.Pod)
		want   string
	}{
		"no --encryption-provider-config": {func(p *corev1.Pod) {
			c := &p.Spec.Containers[0]
			c.Command = c.Command[:len(c.Command)-1]
		}, "no absolute --encryption-provider-config"},
		"config not on a mount": {func(p *corev1.Pod) {
			c := &p.Spec.Containers[0]
			c.Command[len(c.Command)-1] = "--encryption-provider-config=/etc/enc/encryption-config.yaml"
		}, "is not on any volume"},
		"socket directory not mounted": {func(p *corev1.Pod) {
			c := &p.Spec.Containers[0]
			c.VolumeMounts = c.VolumeMounts[:len(c.VolumeMounts)-1]
		}, "plugin socket"},
		"socket directory read-only": {func(p *corev1.Pod) {
			c := &p.Spec.Containers[0]
			c.VolumeMounts[len(c.VolumeMounts)-1].ReadOnly = true
		}, "read-only mount"},
	}
	for name, m := range wiring {
		p := good.DeepCopy()
		m.mutate(p)
		if _, err := encryptionWiringFrom(p, "/r", enc); err == nil || !strings.Contains(err.Error(), m.want) {
			t.Errorf("%s: wiring error %v, want %q", name, err, m.want)
		}
	}
}
