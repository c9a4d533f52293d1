package main

import (
	"context"
	"encoding/csv"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/spf13/cobra"

	"github.com/agentproj/agent/slave/monitor"
)

type topOptions struct {
	api      apiClient
	sort     string
	csvFile  string
	interval time.Duration
	count    int
}

func newTopCmd() *cobra.Command {
	o := &topOptions{}
	cmd := &cobra.Command{
		Use:   "top",
		Short: "Show the process groups and containers an agent's node monitor measures, live",
		Long: `top reads an agent's /metrics/monitor every --interval and shows one line per
process group and container: CPU (100% is one core), memory, open files,
threads, disk and network rates. With --csv it also appends every sample to a
file for offline analysis (a header line when the file is new). Rates need two
readings of the monitor, so they show as "-" until the agent has refreshed
once after the first sample (monitor.interval, 10s by default).`,
		Example: `  # the local agent, busiest first
  agent top

  # another node, by memory, recorded to a CSV file
  agent top --api http://10.0.0.2:9464 --sort mem --csv /tmp/node2.csv --interval 10s

  # an agent whose API serves TLS (api.cert_file), signed by your own CA
  agent top --api https://10.0.0.2:9464 --api-ca-file /etc/agent/api-ca.pem`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.sort != "cpu" && o.sort != "mem" {
				return exitCode{2, fmt.Errorf("--sort: must be cpu or mem, got %q", o.sort)}
			}
			if o.interval < 100*time.Millisecond {
				return exitCode{2, fmt.Errorf("--interval: must be at least 100ms, got %s", o.interval)}
			}
			if o.count < 0 {
				return exitCode{2, fmt.Errorf("--count: must be >= 0, got %d", o.count)}
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return runTop(ctx, cmd.OutOrStdout(), o)
		},
	}
	f := cmd.Flags()
	o.api.addFlags(f, "URL of the agent's API", "")
	f.StringVar(&o.sort, "sort", "cpu", "order of the lines: cpu or mem, highest first")
	f.StringVar(&o.csvFile, "csv", "", "append every sample to this CSV file")
	f.DurationVar(&o.interval, "interval", 5*time.Second, "time between samples")
	f.IntVar(&o.count, "count", 0, "stop after this many samples (0: until interrupted)")
	return cmd
}

// topRow is one group or container in one sample.
type topRow struct {
	kind, name, guid string
	up               bool
	procs, threads   float64
	mem, virt, fds   float64
	// Rates per second; NaN until two readings are known.
	cpu, read, write, rx, tx float64
}

// topSample is one reading of /metrics/monitor.
type topSample struct {
	at       time.Time // the monitor's reading
	rows     []topRow
	counters map[string][5]float64 // row key -> cpu, read, write, rx, tx totals
}

func runTop(ctx context.Context, out io.Writer, o *topOptions) error {
	var csvOut *csv.Writer
	if o.csvFile != "" {
		f, err := os.OpenFile(o.csvFile, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			return exitCode{2, fmt.Errorf("--csv: %w", err)}
		}
		defer f.Close()
		csvOut = csv.NewWriter(f)
		if fi, err := f.Stat(); err == nil && fi.Size() == 0 {
			_ = csvOut.Write([]string{"time", "kind", "name", "guid", "up", "procs", "threads", "cpu_percent",
				"memory_bytes", "virtual_bytes", "open_fds", "read_bytes_per_second", "write_bytes_per_second",
				"receive_bytes_per_second", "transmit_bytes_per_second"})
		}
	}
	clear := isTerminal(out)
	var prev, rates *topSample
	for n := 1; ; n++ {
		cur, err := fetchTop(ctx, &o.api)
		switch {
		case err != nil && prev == nil:
			return err // nothing to show: the agent is not there
		case err != nil:
			fmt.Fprintf(out, "%s: %v\n", time.Now().Format(time.TimeOnly), err)
		default:
			if prev != nil && cur.at.After(prev.at) {
				cur.rates(prev)
				rates, prev = cur, cur
			} else if prev == nil {
				prev = cur
			} else if rates != nil {
				cur.copyRates(rates) // the monitor has not refreshed since
			}
			if clear {
				fmt.Fprint(out, "\033[H\033[2J")
			}
			printTop(out, o, cur)
			if csvOut != nil {
				writeTopCSV(csvOut, cur)
				csvOut.Flush()
				if err := csvOut.Error(); err != nil {
					return fmt.Errorf("--csv: %w", err)
				}
			}
		}
		if o.count > 0 && n >= o.count {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(o.interval):
		}
	}
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// fetchTop reads the monitor's metrics into rows.
func fetchTop(ctx context.Context, api *apiClient) (*topSample, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := api.newRequest(ctx, http.MethodGet, monitor.Path, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "text/plain;version=0.0.4")
	resp, err := api.do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return nil, fmt.Errorf("%s: the node monitor is off on this agent (monitor.enabled = false)", req.URL)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: HTTP %d", req.URL, resp.StatusCode)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", req.URL, err)
	}
	return topFromFamilies(fams), nil
}

func topFromFamilies(fams map[string]*dto.MetricFamily) *topSample {
	s := &topSample{counters: map[string][5]float64{}}
	if f := fams["agent_monitor_refresh_timestamp_seconds"]; f != nil && len(f.Metric) > 0 {
		sec := f.Metric[0].GetGauge().GetValue()
		s.at = time.Unix(0, int64(sec*1e9))
	}
	rows := map[string]*topRow{}
	row := func(kind string, m *dto.Metric) (string, *topRow) {
		l := map[string]string{}
		for _, lp := range m.Label {
			l[lp.GetName()] = lp.GetValue()
		}
		var name string
		switch kind {
		case "group":
			name = l["group"]
		case "container":
			name = l["name"]
		case "pod":
			name = l["namespace"] + "/" + l["pod"]
		}
		key := kind + "/" + name
		r := rows[key]
		if r == nil {
			r = &topRow{kind: kind, name: name, guid: l["guid"]}
			if kind == "pod" {
				// Known only while it has a cgroup; threads, virtual
				// memory and open files never are (no per-process view).
				r.procs, r.threads, r.mem, r.virt, r.fds = nan, nan, nan, nan, nan
			}
			rows[key] = r
		}
		return key, r
	}
	value := func(m *dto.Metric) float64 {
		if m.Counter != nil {
			return m.Counter.GetValue()
		}
		return m.GetGauge().GetValue()
	}
	label := func(m *dto.Metric, name string) string {
		for _, lp := range m.Label {
			if lp.GetName() == name {
				return lp.GetValue()
			}
		}
		return ""
	}
	each := func(family, kind string, fn func(key string, r *topRow, m *dto.Metric, v float64)) {
		if f := fams[family]; f != nil {
			for _, m := range f.Metric {
				key, r := row(kind, m)
				fn(key, r, m, value(m))
			}
		}
	}
	addCounter := func(i int) func(key string, _ *topRow, _ *dto.Metric, v float64) {
		return func(key string, _ *topRow, _ *dto.Metric, v float64) {
			c := s.counters[key]
			c[i] += v
			s.counters[key] = c
		}
	}
	// Groups (process-exporter names), containers (cAdvisor names) and
	// pods (Kubernetes mode, the pod monitor's names).
	each("namedprocess_namegroup_up", "group", func(_ string, r *topRow, _ *dto.Metric, v float64) { r.up = v == 1 })
	each("namedprocess_namegroup_num_procs", "group", func(_ string, r *topRow, _ *dto.Metric, v float64) { r.procs = v })
	each("namedprocess_namegroup_num_threads", "group", func(_ string, r *topRow, _ *dto.Metric, v float64) { r.threads = v })
	each("namedprocess_namegroup_open_filedesc", "group", func(_ string, r *topRow, _ *dto.Metric, v float64) { r.fds = v })
	each("namedprocess_namegroup_memory_bytes", "group", func(_ string, r *topRow, m *dto.Metric, v float64) {
		switch label(m, "memtype") {
		case "resident":
			r.mem = v
		case "virtual":
			r.virt = v
		}
	})
	each("container_up", "container", func(_ string, r *topRow, _ *dto.Metric, v float64) { r.up = v == 1 })
	each("container_processes", "container", func(_ string, r *topRow, _ *dto.Metric, v float64) { r.procs = v })
	each("container_threads", "container", func(_ string, r *topRow, _ *dto.Metric, v float64) { r.threads = v })
	each("container_file_descriptors", "container", func(_ string, r *topRow, _ *dto.Metric, v float64) { r.fds = v })
	each("container_memory_working_set_bytes", "container", func(_ string, r *topRow, _ *dto.Metric, v float64) { r.mem = v })
	each("container_memory_virtual_bytes", "container", func(_ string, r *topRow, _ *dto.Metric, v float64) { r.virt = v })
	each("pod_up", "pod", func(_ string, r *topRow, _ *dto.Metric, v float64) { r.up = v == 1 })
	each("pod_processes", "pod", func(_ string, r *topRow, _ *dto.Metric, v float64) { r.procs = v })
	each("pod_memory_working_set_bytes", "pod", func(_ string, r *topRow, _ *dto.Metric, v float64) { r.mem = v })
	// The counters of each kind's rates: CPU, read, write, receive, transmit.
	for kind, families := range map[string][5]string{
		"group": {"namedprocess_namegroup_cpu_seconds_total", "namedprocess_namegroup_read_bytes_total", "namedprocess_namegroup_write_bytes_total",
			"namedprocess_namegroup_network_receive_bytes_total", "namedprocess_namegroup_network_transmit_bytes_total"},
		"container": {"container_cpu_usage_seconds_total", "container_fs_reads_bytes_total", "container_fs_writes_bytes_total",
			"container_network_receive_bytes_total", "container_network_transmit_bytes_total"},
		"pod": {"pod_cpu_usage_seconds_total", "pod_fs_reads_bytes_total", "pod_fs_writes_bytes_total",
			"pod_network_receive_bytes_total", "pod_network_transmit_bytes_total"},
	} {
		for i, family := range families {
			each(family, kind, addCounter(i))
		}
	}
	for _, r := range rows {
		r.cpu, r.read, r.write, r.rx, r.tx = nan, nan, nan, nan, nan
		s.rows = append(s.rows, *r)
	}
	return s
}

// nan marks a rate not known yet.
var nan = math.NaN()

// rates fills the per-second rates of s from the counters of an earlier
// reading; a row new since then keeps NaN.
func (s *topSample) rates(prev *topSample) {
	dt := s.at.Sub(prev.at).Seconds()
	for i := range s.rows {
		r := &s.rows[i]
		key := r.kind + "/" + r.name
		a, okA := prev.counters[key]
		b, okB := s.counters[key]
		if !okA || !okB || dt <= 0 {
			continue
		}
		rate := func(j int) float64 { return max(0, b[j]-a[j]) / dt }
		r.cpu, r.read, r.write, r.rx, r.tx = 100*rate(0), rate(1), rate(2), rate(3), rate(4)
	}
}

// copyRates repeats the rates of the last reading that had them.
func (s *topSample) copyRates(from *topSample) {
	byKey := map[string]topRow{}
	for _, r := range from.rows {
		byKey[r.kind+"/"+r.name] = r
	}
	for i := range s.rows {
		if f, ok := byKey[s.rows[i].kind+"/"+s.rows[i].name]; ok {
			s.rows[i].cpu, s.rows[i].read, s.rows[i].write, s.rows[i].rx, s.rows[i].tx = f.cpu, f.read, f.write, f.rx, f.tx
		}
	}
}

func sortTop(rows []topRow, by string) {
	key := func(r topRow) float64 {
		v := r.cpu
		if by == "mem" {
			v = r.mem
		}
		if math.IsNaN(v) { // unknown (yet): last
			return -1
		}
		return v
	}
	slices.SortStableFunc(rows, func(a, b topRow) int {
		ka, kb := key(a), key(b)
		switch {
		case ka > kb:
			return -1
		case ka < kb:
			return 1
		}
		return strings.Compare(a.kind+a.name, b.kind+b.name)
	})
}

func printTop(out io.Writer, o *topOptions, s *topSample) {
	sortTop(s.rows, o.sort)
	at := "no reading yet"
	if !s.at.IsZero() {
		at = "reading of " + s.at.Format(time.TimeOnly)
	}
	fmt.Fprintf(out, "node monitor at %s, %s, sorted by %s\n", o.api.url, at, o.sort)
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "KIND\tNAME\tGUID\tUP\tPROCS\tTHREADS\tCPU%\tMEM\tVIRT\tFDS\tREAD/s\tWRITE/s\tRX/s\tTX/s\t")
	for _, r := range s.rows {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n",
			r.kind, r.name, dash(r.guid), upDown(r.up), count(r.procs), count(r.threads), percent(r.cpu),
			bytesText(r.mem), bytesText(r.virt), count(r.fds), bytesText(r.read), bytesText(r.write), bytesText(r.rx), bytesText(r.tx))
	}
	_ = w.Flush()
	if len(s.rows) == 0 {
		fmt.Fprintln(out, "(no process groups, containers or pods: see [monitor] in docs/monitor.md)")
	}
}

func writeTopCSV(w *csv.Writer, s *topSample) {
	at := s.at.UTC().Format(time.RFC3339Nano)
	num := func(v float64) string {
		if math.IsNaN(v) {
			return ""
		}
		return strconv.FormatFloat(v, 'f', -1, 64)
	}
	for _, r := range s.rows {
		_ = w.Write([]string{at, r.kind, r.name, r.guid, upDown(r.up), num(r.procs), num(r.threads), num(r.cpu),
			num(r.mem), num(r.virt), num(r.fds), num(r.read), num(r.write), num(r.rx), num(r.tx)})
	}
}

func upDown(up bool) string {
	if up {
		return "up"
	}
	return "down"
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// count writes a count; "-" when unknown.
func count(v float64) string {
	if math.IsNaN(v) {
		return "-"
	}
	return strconv.FormatFloat(v, 'f', 0, 64)
}

func percent(v float64) string {
	if math.IsNaN(v) {
		return "-"
	}
	return strconv.FormatFloat(v, 'f', 1, 64)
}

// bytesText writes a byte count or rate in binary units; "-" when unknown.
func bytesText(v float64) string {
	if math.IsNaN(v) {
		return "-"
	}
	units := []string{"B", "KiB", "MiB", "GiB", "TiB"}
	i := 0
	for v >= 1024 && i < len(units)-1 {
		v /= 1024
		i++
	}
	if i == 0 {
		return strconv.FormatFloat(v, 'f', 0, 64) + units[0]
	}
	return strconv.FormatFloat(v, 'f', 1, 64) + units[i]
}
