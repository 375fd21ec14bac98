// Command kubelet is the real Kubernetes node agent, built from the k8s.io/kubernetes Go
// module pinned in ../../go.mod (the same version as cmd/kube-apiserver), for the
// static-pod test in tests/integration/test_kubelet.py. Like upstream cmd/kubelet, all it
// does is hand the command line to the kubelet's cobra command.
package main

import (
	"context"
	"os"

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"          // the JSON log format, as upstream
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // client-go metrics, as upstream
	_ "k8s.io/component-base/metrics/prometheus/version"  // the version metric, as upstream
	"k8s.io/kubernetes/cmd/kubelet/app"
)

func main() {
	os.Exit(cli.Run(app.NewKubeletCommand(context.Background())))
}
