package etcd

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	"github.com/agentproj/agent/drivers/workload"
)

// EndpointsFile is where, in the agent's data directory, the client URLs
// of the etcd's voting members are kept as the agent last saw them
// (Grower.sync writes it when they change). A founding agent, which has no
// --etcd, reads it at its next start: if its member was replaced while it
// was down, those are the members it asks (RestartMember).
const EndpointsFile = "etcd-endpoints.json"

// rememberEndpoints writes eps to file, whole or not at all.
func rememberEndpoints(file string, eps []string) error {
	b, err := json.Marshal(eps)
	if err != nil {
		return err
	}
	_, err = workload.WriteFile(file, append(b, '\n'))
	return err
}

// RememberedEndpoints are the client URLs in file other than self: none
// when the file does not exist (an etcd that never grew). A file that is
// not a JSON list of URLs is an error naming it.
func RememberedEndpoints(file, self string) ([]string, error) {
	b, err := os.ReadFile(file)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var eps []string
	if err := json.Unmarshal(b, &eps); err != nil {
		return nil, fmt.Errorf("%s: not a list of etcd client URLs: %w", filepath.Clean(file), err)
	}
	return slices.DeleteFunc(eps, func(u string) bool { return u == self }), nil
}
