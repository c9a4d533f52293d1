package helm

import (
	"context"
	"embed"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"helm.sh/helm/v4/pkg/chart/v2/loader"
	chartutil "helm.sh/helm/v4/pkg/chart/v2/util"
	repo "helm.sh/helm/v4/pkg/repo/v1"

	"github.com/agentproj/agent/drivers/helm/kubetest"
)

// A repository chart is downloaded once (a chart repository served on
// loopback: index.yaml and the packaged hello chart), then read from the
// cache; each call gives a chart of its own.
func TestRepositoryChartIsDownloadedOnce(t *testing.T) {
	dir := t.TempDir()
	ch, err := loader.Load(kubetest.Chart("hello"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := chartutil.Save(ch, dir); err != nil {
		t.Fatal(err)
	}
	var requests, archives atomic.Int32
	files := http.FileServer(http.Dir(dir))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		if strings.HasSuffix(r.URL.Path, ".tgz") {
			archives.Add(1)
		}
		files.ServeHTTP(w, r)
	}))
	defer srv.Close()
	idx, err := repo.IndexDirectory(dir, srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	if err := idx.WriteFile(filepath.Join(dir, "index.yaml"), 0o644); err != nil {
		t.Fatal(err)
	}

	c := &Client{cfg: Config{ChartCache: filepath.Join(t.TempDir(), "cache")}, log: quiet(), charts: map[ChartRef]string{}}
	ref := ChartRef{Repository: srv.URL, Name: "hello", Version: "0.1.0"}
	a, err := c.LoadChart(context.Background(), ref)
	if err != nil {
		t.Fatal(err)
	}
	b, err := c.LoadChart(context.Background(), ref)
	if err != nil {
		t.Fatal(err)
	}
	if a.Metadata.Name != "hello" || a.Metadata.Version != "0.1.0" || a.Digest != b.Digest || a.Chart == b.Chart {
		t.Fatalf("loaded %v and %v", a.Metadata, b.Metadata)
	}
	if archives.Load() != 1 || requests.Load() != 2 {
		t.Fatalf("%d requests, %d for the archive; want 2 (index, archive) and 1", requests.Load(), archives.Load())
	}
	if a.Digest != ChartDigest(ch) {
		t.Fatal("the downloaded chart's digest differs from the local chart's")
	}
	_, err = c.LoadChart(context.Background(), ChartRef{Repository: srv.URL, Name: "hello", Version: "9.9.9"})
	if err == nil || !strings.Contains(err.Error(), "download chart "+srv.URL+"/hello:9.9.9") || !strings.Contains(err.Error(), "9.9.9") {
		t.Fatalf("missing version: %v", err)
	}
}

//go:embed testdata/embedded
var embeddedFS embed.FS

func TestLoadFSAndDigest(t *testing.T) {
	a, err := LoadFS(embeddedFS, "testdata/embedded")
	if err != nil {
		t.Fatal(err)
	}
	if a.Metadata.Name != "embedded" || len(a.Templates) != 1 {
		t.Fatalf("loaded %+v", a.Metadata)
	}
	b, _ := LoadFS(embeddedFS, "testdata/embedded")
	if a.Digest != b.Digest {
		t.Fatal("the same chart read twice has two digests")
	}
	b.Templates[0].Data = append(b.Templates[0].Data, '\n')
	if ChartDigest(b.Chart) == a.Digest {
		t.Fatal("a changed template keeps the digest")
	}
	if _, err := os.Stat("testdata/embedded/Chart.yaml"); err != nil {
		t.Fatal(err)
	}
}
