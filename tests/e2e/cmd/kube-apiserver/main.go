// Command kube-apiserver is the real Kubernetes API server, built from the
// k8s.io/kubernetes Go module (the version pinned in ../../go.mod), for the
// end-to-end test in this module. It is the upstream cmd/kube-apiserver main.
package main

import (
	"os"
	_ "time/tzdata" // as upstream: CronJob time zones

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"          // as upstream: JSON log format
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // as upstream: client-go metrics
	_ "k8s.io/component-base/metrics/prometheus/version"  // as upstream: version metric
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() {
	command := app.NewAPIServerCommand()
	code := cli.Run(command)
	os.Exit(code)
}
