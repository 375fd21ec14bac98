// Command kubeadm is the real kubeadm, built from the k8s.io/kubernetes Go module (the
// version pinned in ../../go.mod), so the tests render the kube-apiserver static pod with
// the same code an operator runs. It only hands over to the kubeadm application; kubeadm's
// own error helper prints a failure and picks the exit status.
package main

import (
	kubeadm "k8s.io/kubernetes/cmd/kubeadm/app"
	kubeadmerrors "k8s.io/kubernetes/cmd/kubeadm/app/util/errors"
)

func main() {
	kubeadmerrors.HandleError(kubeadm.Run())
}
