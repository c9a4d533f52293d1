package helm

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"helm.sh/helm/v4/pkg/action"
	"helm.sh/helm/v4/pkg/chart/loader/archive"
	chart "helm.sh/helm/v4/pkg/chart/v2"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	"helm.sh/helm/v4/pkg/cli"
	"helm.sh/helm/v4/pkg/registry"
)

// ChartRef says where a chart comes from: a local Path, or a Repository
// (https:// index or oci:// registry path) with a chart Name and an exact
// Version.
type ChartRef struct {
	Repository string
	Name       string
	Version    string
	Path       string
}

// String is the reference as status shows it.
func (r ChartRef) String() string {
	if r.Path != "" {
		return r.Path
	}
	return r.Repository + "/" + r.Name + ":" + r.Version
}

// Chart is a loaded chart and the digest of its content.
type Chart struct {
	*chart.Chart
	// Digest covers every file of the chart and of its dependencies, so a
	// local chart edited without a version bump still counts as changed.
	Digest string
}

// LoadChart reads the chart ref names, afresh on every call: Helm changes
// a chart while it installs it (it drops the dependencies the values
// disable), so two releases never share one. A repository chart is
// downloaded once into Config.ChartCache and read from there afterwards:
// its version is exact, so it cannot change. A local chart is read from
// its path, so that an edited chart is seen.
func (c *Client) LoadChart(ctx context.Context, ref ChartRef) (Chart, error) {
	path := ref.Path
	if path == "" {
		c.chartMu.Lock()
		p, ok := c.charts[ref]
		c.chartMu.Unlock()
		if !ok {
			var err error
			if p, err = c.download(ctx, ref); err != nil {
				return Chart{}, fmt.Errorf("download chart %s: %w", ref, err)
			}
			c.chartMu.Lock()
			c.charts[ref] = p
			c.chartMu.Unlock()
		}
		path = p
	}
	ch, err := loader.Load(path)
	if err != nil {
		return Chart{}, fmt.Errorf("load chart %s: %w", ref, err)
	}
	if ref.Path == "" && ch.Metadata.Name != ref.Name {
		return Chart{}, fmt.Errorf("load chart %s: the archive holds chart %q", ref, ch.Metadata.Name)
	}
	return Chart{ch, ChartDigest(ch)}, nil
}

// download fetches a repository chart into the chart cache and returns its
// archive's path. Helm's downloader takes no context; the caller's
// deadline still ends the wait for it.
func (c *Client) download(ctx context.Context, ref ChartRef) (string, error) {
	if c.cfg.ChartCache == "" {
		return "", errors.New("no chart cache directory is configured")
	}
	dir := c.cfg.ChartCache
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	settings := cli.New()
	settings.RepositoryConfig = filepath.Join(dir, "repositories.yaml")
	settings.RepositoryCache = filepath.Join(dir, "repository")
	settings.ContentCache = filepath.Join(dir, "content")
	settings.RegistryConfig = filepath.Join(dir, "registry.json")
	rc, err := registry.NewClient(registry.ClientOptCredentialsFile(settings.RegistryConfig), registry.ClientOptWriter(io.Discard))
	if err != nil {
		return "", err
	}
	in := action.NewInstall(action.NewConfiguration())
	in.SetRegistryClient(rc)
	in.Version = ref.Version
	name := ref.Name
	if registry.IsOCI(ref.Repository) {
		name = strings.TrimSuffix(ref.Repository, "/") + "/" + ref.Name
	} else {
		in.RepoURL = ref.Repository
	}
	type result struct {
		path string
		err  error
	}
	done := make(chan result, 1)
	go func() {
		p, err := in.LocateChart(name, settings)
		done <- result{p, err}
	}()
	select {
	case r := <-done:
		return r.path, r.err
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// ChartDigest is a SHA-256 over a chart's metadata, values, schema,
// templates and files, and those of its dependencies; modification times
// are left out, so the same chart read twice has the same digest.
func ChartDigest(ch *chart.Chart) string {
	h := sha256.New()
	var walk func(ch *chart.Chart)
	walk = func(ch *chart.Chart) {
		meta, _ := json.Marshal(ch.Metadata)
		values, _ := json.Marshal(ch.Values) // map keys sorted
		fmt.Fprintf(h, "chart %d\n%s\nvalues %d\n%s\nschema %d\n%s\n", len(meta), meta, len(values), values, len(ch.Schema), ch.Schema)
		for _, f := range ch.Templates {
			fmt.Fprintf(h, "template %s %d\n%s\n", f.Name, len(f.Data), f.Data)
		}
		for _, f := range ch.Files {
			fmt.Fprintf(h, "file %s %d\n%s\n", f.Name, len(f.Data), f.Data)
		}
		for _, d := range ch.Dependencies() {
			walk(d)
		}
	}
	walk(ch)
	return hex.EncodeToString(h.Sum(nil))
}

// LoadFS reads the chart in directory dir of fsys (a chart built into the
// agent with go:embed), afresh, like LoadChart.
func LoadFS(fsys fs.FS, dir string) (Chart, error) {
	var files []*archive.BufferedFile
	err := fs.WalkDir(fsys, dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		b, err := fs.ReadFile(fsys, p)
		if err != nil {
			return err
		}
		files = append(files, &archive.BufferedFile{Name: strings.TrimPrefix(p, dir+"/"), Data: b})
		return nil
	})
	if err != nil {
		return Chart{}, fmt.Errorf("read chart %s: %w", dir, err)
	}
	ch, err := loader.LoadFiles(files)
	if err != nil {
		return Chart{}, fmt.Errorf("load chart %s: %w", dir, err)
	}
	return Chart{ch, ChartDigest(ch)}, nil
}
