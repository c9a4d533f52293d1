package state

import (
	"os"
	"path/filepath"
)

// serviceAccountDir holds the pod's service account, mounted by Kubernetes.
const serviceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount"

// InCluster reports whether the agent runs in a Kubernetes pod with a
// service account: the API's address in the environment and the token on
// disk.
func InCluster() bool {
	if os.Getenv("KUBERNETES_SERVICE_HOST") == "" || os.Getenv("KUBERNETES_SERVICE_PORT") == "" {
		return false
	}
	_, err := os.Stat(filepath.Join(serviceAccountDir, "token"))
	return err == nil
}

// PodNamespace is the namespace of the agent's pod: $POD_NAMESPACE (the
// chart sets it), else the service account's namespace file; "" outside a
// pod.
func PodNamespace() string {
	if ns := os.Getenv("POD_NAMESPACE"); ns != "" {
		return ns
	}
	b, err := os.ReadFile(filepath.Join(serviceAccountDir, "namespace"))
	if err != nil {
		return ""
	}
	return string(b)
}
