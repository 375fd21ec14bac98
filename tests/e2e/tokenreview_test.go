// Kubernetes auth against a real TokenReview (issue 7 part 5). This kube-apiserver (its Secrets
// encrypted through the harness's plugin, which logs in to OpenBao with a token: the apiserver
// depends on it) serves TokenReview for OpenBao's kubernetes auth method. The test:
//
//   - creates ServiceAccounts kube-system/trousseau (the identity a second plugin logs in as),
//     kube-system/intruder (a different SA, must be refused) and kube-system/vault-auth (the
//     reviewer), and a ClusterRoleBinding of vault-auth to system:auth-delegator;
//   - gets a token for each through the TokenRequest API;
//   - hands them to the driver (tests/integration/test_e2e_tokenreview.py) in
//     $TROUSSEAU_TR_DIR/handoff.json (+ token files, 0600) and waits for $TROUSSEAU_TR_DIR/done;
//     the driver configures auth/kubernetes against this apiserver and runs a second plugin
//     with vault.auth.method kubernetes (the ordering problem: the plugin kube-apiserver itself
//     uses cannot log in through an apiserver that is not up yet, so a second instance does);
//   - then checks from kube-apiserver's own metrics that OpenBao really sent TokenReviews, and
//     that the reviewer identity was authorised to (no 403).
//
// Skips without TROUSSEAU_TR_DIR (the driver asserts "--- PASS" so a skip cannot look green).
package e2e

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

type trHandoff struct {
	APIServerURL    string `json:"apiserver_url"`
	CAFile          string `json:"ca_file"`
	ReviewerJWTFile string `json:"reviewer_jwt_file"`
	PluginJWTFile   string `json:"plugin_jwt_file"`
	IntruderJWTFile string `json:"intruder_jwt_file"`
	Namespace       string `json:"namespace"`
	ServiceAccount  string `json:"service_account"`
}

var tokenReviewsRe = regexp.MustCompile(`^apiserver_request_total\{([^}]*)\} ([0-9.e+]+)$`)

// tokenReviews counts create requests on tokenreviews by HTTP code, from the apiserver's metrics.
func tokenReviews(t *testing.T, a *apiServer) map[string]int {
	t.Helper()
	code, body, err := getURL(a.http, a.url+"/metrics")
	if err != nil || code != 200 {
		t.Fatalf("GET /metrics: HTTP %d %v", code, err)
	}
	out := map[string]int{}
	for _, line := range strings.Split(body, "\n") {
		m := tokenReviewsRe.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		labels := map[string]string{}
		for _, l := range labelRe.FindAllStringSubmatch(m[1], -1) {
			labels[l[1]] = l[2]
		}
		if labels["resource"] != "tokenreviews" || labels["verb"] != "POST" && labels["verb"] != "CREATE" {
			continue
		}
		v, _ := strconv.ParseFloat(m[2], 64)
		out[labels["code"]] += int(v)
	}
	return out
}

func TestKubernetesAuthTokenReview(t *testing.T) {
	hdir := os.Getenv("TROUSSEAU_TR_DIR")
	if hdir == "" {
		t.Skip("TROUSSEAU_TR_DIR is not set: this test is run by tests/integration/test_e2e_tokenreview.py")
	}
	env := loadEnv(t)
	waitMax := envDuration(t, "TROUSSEAU_TR_WAIT", 5*time.Minute)
	dir := workDir(t, env, "trousseau-e2e-tr-")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	et := startEtcd(t, env.etcdBin, dir, env.startTimeout)
	p := makePKI(t, filepath.Join(dir, "pki"))
	encCfg := filepath.Join(dir, "encryption-config.yaml")
	writeEncryptionConfig(t, encCfg, providerName, env.socket)
	api := startAPIServer(t, env.apiserverBin, dir, "kube-apiserver-tr", et.clientURL, []string{"--encryption-provider-config=" + encCfg}, p, env.startTimeout)
	t.Logf("kube-apiserver ready at %s, Secrets encrypted through the harness's (token-auth) plugin", api.url)

	const ns = "kube-system"
	for _, sa := range []string{"trousseau", "intruder", "vault-auth"} {
		if _, err := api.client.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{
			ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create ServiceAccount %s/%s: %v", ns, sa, err)
		}
	}
	if _, err := api.client.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "vault-auth-tokenreview"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "system:auth-delegator"},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: "vault-auth", Namespace: ns}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create ClusterRoleBinding: %v", err)
	}
	t.Logf("ServiceAccounts %s/{trousseau,intruder,vault-auth}; vault-auth bound to system:auth-delegator", ns)

	tokenFile := func(sa string) string {
		t.Helper()
		exp := int64(3600)
		tr, err := api.client.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa, &authenticationv1.TokenRequest{
			Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &exp}}, metav1.CreateOptions{})
		if err != nil || tr.Status.Token == "" {
			t.Fatalf("TokenRequest for %s/%s: %v", ns, sa, err)
		}
		path := filepath.Join(hdir, sa+".jwt")
		if err := os.WriteFile(path, []byte(tr.Status.Token), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	h := trHandoff{
		APIServerURL: api.url, CAFile: p.caFile,
		ReviewerJWTFile: tokenFile("vault-auth"), PluginJWTFile: tokenFile("trousseau"),
		IntruderJWTFile: tokenFile("intruder"), Namespace: ns, ServiceAccount: "trousseau",
	}
	before := tokenReviews(t, api)
	b, _ := json.Marshal(h)
	tmp := filepath.Join(hdir, "handoff.json.tmp")
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(hdir, "handoff.json")); err != nil {
		t.Fatal(err)
	}
	t.Logf("tokens from the TokenRequest API handed to the driver; waiting up to %s for it to finish", waitMax)

	deadline := time.Now().Add(waitMax)
	for {
		if _, err := os.Stat(filepath.Join(hdir, "done")); err == nil {
			break
		}
		if _, err := os.Stat(filepath.Join(hdir, "failed")); err == nil {
			t.Fatal("the driver reported a failure (see its output)")
		}
		if time.Now().After(deadline) || api.exited() {
			t.Fatalf("the driver did not finish within %s (apiserver exited: %v)", waitMax, api.exited())
		}
		time.Sleep(200 * time.Millisecond)
	}
	reviews := tokenReviews(t, api)
	created := reviews["201"] - before["201"]
	t.Logf("TokenReviews kube-apiserver served to OpenBao meanwhile, by HTTP code: %v (before: %v)", reviews, before)
	// at least the plugin's login (the intruder may be refused by OpenBao on its token's SA
	// name claim before any review); a 403 would mean the reviewer was not authorised
	if created < 1 {
		t.Errorf("kube-apiserver served %d TokenReviews: OpenBao never asked it", created)
	}
	if n := reviews["403"] - before["403"]; n != 0 {
		t.Errorf("%d TokenReviews were forbidden: the reviewer lacks system:auth-delegator", n)
	}
	api.stop(t, 60*time.Second)
	et.stop(t, 30*time.Second)
}
